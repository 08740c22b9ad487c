"""Resources: what task code may use besides its params, handed to it on its TaskContext.

``ctx.resources`` gives the settings, the store, the SQL engine of a
workload's own tables, the data folder and each workload's settings. A
worker process has one set: the API process shares its app's store; a
forked local worker or a Celery worker builds its own connections from the
settings on first use (connections never cross a fork).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from conveyor.errors import ConfigurationError
from conveyor.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from conveyor.stores.base import Store

__all__ = ["Resources"]


class Resources:
    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        workload_settings: Mapping[str, BaseModel | None] | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._workload_settings = dict(workload_settings or {})
        self._lock = threading.Lock()

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                from conveyor.stores import open_store

                self._store = open_store(
                    self.settings.resolved_database_url,
                    result_ttl=self.settings.effective_result_ttl,
                    deadlines=self.settings.deadlines,
                )
            return self._store

    @property
    def engine(self) -> Engine:
        """The SQL engine for a workload's own tables; a clear error when the store is not SQL."""
        engine = self.store.engine
        if engine is None:
            raise ConfigurationError(f"this workload needs a SQL database; the store is {self.store.kind}")
        return engine

    def workload_settings(self, name: str) -> Any:
        """The settings object of a loaded workload (its ``CONVEYOR_<NAME>_*`` values)."""
        try:
            found = self._workload_settings[name]
        except KeyError:
            raise ConfigurationError(f"workload {name!r} is not loaded in this process") from None
        if found is None:
            raise ConfigurationError(f"workload {name!r} has no settings")
        return found

    def forked(self) -> Resources:
        """The same resources for a forked child: settings kept, connections made anew there.

        An in-memory store is kept, being the only copy of its records.
        """
        shared = self._store if self._store is not None and self._store.kind == "memory" else None
        return Resources(self.settings, store=shared, workload_settings=self._workload_settings)
