"""Which queue a process uses, built from its settings: the same answer in the API, a worker and the CLI."""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa

from conveyor.errors import ConfigurationError
from conveyor.settings import Settings
from conveyor.workloads.movement_logs.config import MovementLogsSettings
from conveyor.workloads.movement_logs.queue import RedisLogQueue, SqlLogQueue

__all__ = ["WORKLOAD", "open_queue", "redis_url_for", "workload_settings"]

WORKLOAD = "movement_logs"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

_lock = threading.Lock()
#: one Redis queue (and its connection pool) per URL and name in this process; redis-py
#: pools notice a fork and reconnect, so a forked worker may keep using it
_redis_queues: dict[tuple[str, str, float], RedisLogQueue] = {}


def workload_settings(holder: Any) -> MovementLogsSettings:
    """This workload's settings from a Conveyor or a worker's resources (``workload_settings(name)``)."""
    getter = getattr(holder, "workload_settings", None)
    if getter is not None:
        try:
            value = getter(WORKLOAD)
        except ConfigurationError:  # not loaded here (a CLI over another set): the environment's values
            return MovementLogsSettings()
        if isinstance(value, MovementLogsSettings):
            return value
    return MovementLogsSettings()


def redis_url_for(settings: Settings, wl: MovementLogsSettings) -> str | None:
    """The Redis URL of the log queue, or None for the SQL queue table.

    ``CONVEYOR_MOVEMENT_LOGS_REDIS_URL`` first; else the store's Redis, or the
    broker's when Celery runs on Redis; else (the embedded default) none.
    """
    if wl.queue_backend == "sql":
        return None
    if wl.redis_url:
        return wl.redis_url
    if settings.store_kind == "redis":
        return settings.resolved_database_url
    if settings.executor in ("celery", "hybrid") and settings.broker_url.startswith(_REDIS_SCHEMES):
        return settings.broker_url
    if wl.queue_backend == "redis":
        raise ConfigurationError(
            "CONVEYOR_MOVEMENT_LOGS_QUEUE_BACKEND=redis needs a Redis: set CONVEYOR_MOVEMENT_LOGS_REDIS_URL"
        )
    return None


def open_queue(settings: Settings, wl: MovementLogsSettings, engine: sa.Engine | None) -> RedisLogQueue | SqlLogQueue:
    url = redis_url_for(settings, wl)
    if url is not None:
        key = (url, wl.queue_name, wl.lease_seconds)
        with _lock:
            queue = _redis_queues.get(key)
            if queue is None:
                queue = _redis_queues[key] = RedisLogQueue(url, wl.queue_name, lease_seconds=wl.lease_seconds)
        return queue
    if engine is None:
        raise ConfigurationError("the movement logs queue table needs a SQL database (CONVEYOR_DATABASE_URL)")
    return SqlLogQueue(engine, wl.queue_name)
