"""Stores: where task records live. One protocol (``base.Store``), one module per backend.

``open_store`` picks the backend from a database URL; ``store_kind`` is the one
place that reads a URL's scheme (``Settings.store_kind`` asks it too).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from conveyor.stores.base import Store
    from conveyor.stores.deadlines import Deadlines

__all__ = ["StoreKind", "open_store", "store_kind"]

StoreKind = Literal["sql", "redis", "memory"]


def store_kind(url: str) -> StoreKind:
    """``redis`` for ``redis://``, ``rediss://`` and ``unix://``; ``memory`` for ``memory://``; else ``sql``."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return "redis"
    if url.startswith("memory://"):
        return "memory"
    return "sql"


def open_store(
    url: str,
    *,
    result_ttl: float = 0,
    migrations: Mapping[str, Path] | None = None,
    deadlines: Deadlines | None = None,
) -> Store:
    """A store for a database URL: ``sqlite://``, ``postgresql+psycopg://``, ``redis://`` or ``memory://``.

    ``migrations``: the Alembic version folders of loaded workloads (name →
    folder), run after the core's when a SQL store opens. ``deadlines``: how
    long its calls may take (``Settings.deadlines``; defaults otherwise).
    """
    kind = store_kind(url)
    if kind == "memory":
        from conveyor.stores.memory import MemoryStore

        return MemoryStore()
    if kind == "redis":
        from conveyor.stores.redis import RedisStore

        return RedisStore(url, default_ttl=result_ttl, deadlines=deadlines)
    from conveyor.stores.sql import SqlStore

    return SqlStore(url, migrations=migrations, deadlines=deadlines)
