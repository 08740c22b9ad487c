"""Resources: what task code may use besides its params (settings, store, database).

A worker process has one set: the API process shares its app's store; a
forked local worker or a Celery worker builds its own connections from the
settings on first use (connections never cross a fork).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from conveyor.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from conveyor.stores.base import Store

__all__ = ["Resources", "current", "install"]


class Resources:
    def __init__(self, settings: Settings, *, store: Store | None = None) -> None:
        self.settings = settings
        self._store = store
        self._lock = threading.Lock()

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                from conveyor.stores.base import open_store

                self._store = open_store(
                    self.settings.resolved_database_url, result_ttl=self.settings.effective_result_ttl
                )
            return self._store

    @property
    def engine(self) -> Engine:
        """The SQL engine for workload tables (documents, corrections, movement logs)."""
        engine: Any = getattr(self.store, "engine", None)
        if engine is None:
            raise RuntimeError(f"this workload needs a SQL database; the store is {self.store.kind}")
        return engine  # type: ignore[no-any-return]


_current: Resources | None = None


def install(resources: Resources) -> None:
    global _current
    _current = resources


def current() -> Resources:
    """This process's resources; built from the environment if nobody installed any."""
    global _current
    if _current is None:
        _current = Resources(Settings())
    return _current
