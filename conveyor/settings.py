"""Settings: every knob in one object, read from ``CONVEYOR_*`` environment variables."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from conveyor.stores import StoreKind, store_kind
from conveyor.stores.deadlines import Deadlines

__all__ = ["Settings"]


def _parse_api_keys(value: object) -> dict[str, str]:
    """``key=tenant,key2=tenant2`` or a JSON object ``{"key": "tenant"}``."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    text = str(value).strip()
    if text.startswith("{"):
        return {str(k): str(v) for k, v in json.loads(text).items()}
    keys: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, tenant = part.partition("=")
        if not sep:
            key, sep, tenant = part.partition(":")
        if not sep or not key.strip() or not tenant.strip():
            raise ValueError(f"API key entry {part!r} must look like key=tenant")
        keys[key.strip()] = tenant.strip()
    return keys


def _parse_queues(value: object) -> dict[str, int]:
    """``default:2,uploads:1`` or a JSON object ``{"default": 2}``: worker processes per queue."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    else:
        text = str(value).strip()
        if text.startswith("{"):
            items = [(str(k), v) for k, v in json.loads(text).items()]
        else:
            items = []
            for part in text.split(","):
                if part.strip():
                    name, sep, count = part.strip().rpartition(":")
                    if not sep:
                        raise ValueError(f"queue entry {part.strip()!r} must look like queue:processes")
                    items.append((name, count))
    lanes: dict[str, int] = {}
    for name, count in items:
        try:
            n = int(count)
        except (TypeError, ValueError):
            raise ValueError(f"queue {name!r}: {count!r} is not a number of processes") from None
        if not name.strip() or not 1 <= n <= 256:
            raise ValueError(f"queue entry {name!r}:{count!r} needs a name and 1 to 256 processes")
        lanes[name.strip()] = n
    return lanes


class Settings(BaseSettings):
    """Conveyor's configuration. Every field can be set as ``CONVEYOR_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    #: where the SQLite file, uploads and task work folders live
    data_dir: Path = Field(default_factory=lambda: Path.cwd() / "conveyor-data")
    #: ``sqlite:///path``, ``postgresql://user@host/db`` or ``redis://host/db``;
    #: empty means SQLite in ``data_dir``
    database_url: str = ""
    #: ``local`` (in-process pool), ``celery`` or ``hybrid``
    executor: Literal["local", "celery", "hybrid"] = "local"
    broker_url: str = "redis://127.0.0.1:6379/0"
    #: hybrid executor: task types sent to Celery besides those marked ``heavy``
    celery_task_types: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: seed 002's name for the same set (``CONVEYOR_HEAVY_TASKS=process_speak_audio,...``); both are honoured
    heavy_tasks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: hybrid executor, broker down at submit time: run in-process (``local``) or answer 503 (``reject``)
    broker_down: Literal["local", "reject"] = "local"
    #: messages a Celery worker process reserves ahead (Celery's prefetch multiplier). 1 is
    #: fair to long tasks; more makes short tasks faster. Late acks keep reserved ones safe.
    celery_prefetch: int = Field(default=1, ge=1, le=128)
    #: a PENDING Celery task not started this many seconds after it was due (its eta, or its
    #: submit) is sent again: its message was lost (a broker restart, a crash before the send)
    #: or is held by a worker that died. Each further re-send waits as long as the task has
    #: already waited. A duplicate message is harmless: only one claim of a task succeeds.
    celery_pending_grace: float = Field(default=300.0, gt=0)
    #: seconds between rounds of the Celery reaper (lapsed leases, overdue tasks); unset: a
    #: third of ``lease_seconds``
    celery_reap_interval: float | None = Field(default=None, gt=0)
    #: API keys mapped to tenants: ``key=tenant,key2=tenant2`` or JSON
    api_keys: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    #: API keys of operators (``key=name,...``): admin actions, internal task types,
    #: the whole deployment's queues and workers. With no API keys at all the local
    #: caller is an operator.
    operator_keys: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    #: signs short-lived stream tokens (SSE URLs); unset: derived from the API keys.
    #: Give every API replica the same value.
    secret_key: str = ""
    #: the tenant used when no keys are configured (loopback only)
    local_tenant: str = "local"

    #: worker processes of the local executor's ``default`` lane (see ``queues``)
    concurrency: int = Field(default_factory=lambda: max(2, os.cpu_count() or 2), ge=1, le=256)
    #: the local executor's lanes: worker processes per queue, ``default:2,uploads:1``.
    #: Unset: ``default`` gets ``concurrency`` and every other queue the loaded task types
    #: declare gets one process of its own. Set: exactly these lanes (``default`` gets
    #: ``concurrency`` unless listed); tasks of an unlisted queue run in ``default``.
    queues: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    #: tasks one local worker process holds (running and next, each PROCESSING); at least
    #: this many, more for tasks shorter than a store write (up to 32); the next one is handed
    #: over just before the running one is expected to end; 1: one at a time
    prefetch: int = Field(default=2, ge=1, le=64)
    #: how often buffered progress and state changes are written, in seconds
    flush_interval: float = Field(default=0.02, gt=0, le=5)
    #: a running task's claim lasts this long unless its worker renews it
    lease_seconds: float = Field(default=30.0, gt=1)
    #: graceful shutdown waits this long for running tasks
    shutdown_timeout: float = Field(default=30.0, ge=0)

    # Deadlines on dependency calls: one that passes answers 503 with Retry-After
    # naming the dependency, instead of holding the request (and a thread) forever.
    #: opening a connection to the database or Redis, in seconds
    store_connect_timeout: float = Field(default=3.0, gt=0, le=300)
    #: one SQL statement (PostgreSQL ``statement_timeout``, then the connection is
    #: dropped a second later if the server does not answer at all), SQLite's busy
    #: wait, one Redis command
    store_statement_timeout: float = Field(default=5.0, gt=0, le=3600)
    #: waiting for a row or table lock on PostgreSQL (``lock_timeout``)
    store_lock_timeout: float = Field(default=3.0, gt=0, le=3600)
    #: waiting for a free pooled database connection
    store_pool_timeout: float = Field(default=2.0, gt=0, le=300)
    #: connecting to the broker and sending one message to it (Celery, hybrid)
    broker_timeout: float = Field(default=3.0, gt=0, le=300)
    #: ``/health`` answers within this long; a part that has not answered is reported down
    health_timeout: float = Field(default=2.0, gt=0, le=60)

    #: largest request body accepted, in MiB (uploads included)
    max_body_mb: float = Field(default=100.0, gt=0)
    #: requests a second one tenant may make to the API (a burst of ``tenant_burst`` first);
    #: 0 turns the limit off. Operators and the keyless local caller are not limited.
    tenant_rate: float = Field(default=200.0, ge=0)
    tenant_burst: int = Field(default=2000, ge=1)
    #: live streams (SSE) one tenant may hold open at once; 0: no limit
    tenant_max_streams: int = Field(default=20, ge=0)
    #: worker processes of one local lane that one tenant's tasks may hold at once; 0: no limit.
    #: With a limit below the lane's size a flooding tenant never holds every worker, so another
    #: tenant's task starts at once instead of after a running one (the local executor only)
    tenant_max_workers: int = Field(default=0, ge=0)
    #: the highest priority a tenant may ask for (operators may use up to 9)
    tenant_max_priority: int = Field(default=6, ge=0, le=9)
    #: tasks one ``POST /api/v1/tasks/batch`` may carry (each also counts against the tenant's rate)
    max_batch_size: int = Field(default=1000, ge=1, le=100_000)
    #: unfinished tasks one tenant may have at once
    max_unfinished_per_tenant: int = Field(default=10_000, ge=1)
    #: seconds a finished task's record and result are kept (0: forever); unset: one
    #: week on SQL, one hour on the Redis-only store (seed 004's expiry)
    result_ttl: float | None = Field(default=None, ge=0)
    #: run the periodic-job scheduler inside ``serve``
    scheduler: bool = True

    #: one log line per HTTP request (uvicorn's access log, credentials masked). Off by default:
    #: a write per request costs more than the request itself; a proxy in front usually logs them anyway.
    access_log: bool = False

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    #: allow a non-loopback ``serve`` with no API keys (every caller is one tenant)
    insecure: bool = False
    #: workloads whose task types and routes are loaded (names or dotted module paths);
    #: unset: ``system`` and every built-in workload whose extra is installed and whose
    #: store needs are met. Each workload reads its own ``CONVEYOR_<WORKLOAD>_*`` settings.
    workloads: Annotated[list[str] | None, NoDecode] = None

    @field_validator("api_keys", "operator_keys", mode="before")
    @classmethod
    def _keys(cls, value: object) -> dict[str, str]:
        return _parse_api_keys(value)

    @field_validator("queues", mode="before")
    @classmethod
    def _queues(cls, value: object) -> dict[str, int]:
        return _parse_queues(value)

    @field_validator("workloads", "celery_task_types", "heavy_tasks", mode="before")
    @classmethod
    def _names(cls, value: object) -> list[str] | None:
        if value is None:
            return None
        if isinstance(value, str):
            return [w.strip() for w in value.split(",") if w.strip()]
        if isinstance(value, list | tuple):
            return [str(w) for w in value]
        raise ValueError("must be a comma-separated list of names")

    @property
    def resolved_database_url(self) -> str:
        """The database URL with defaults applied and a driver chosen."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'conveyor.db'}"
        # A plain postgresql:// URL would make SQLAlchemy look for psycopg2; we
        # ship psycopg 3, so name its driver unless the user chose one.
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @property
    def effective_result_ttl(self) -> float:
        if self.result_ttl is not None:
            return self.result_ttl
        return 3600.0 if self.store_kind == "redis" else 7 * 24 * 3600.0

    @property
    def deadlines(self) -> Deadlines:
        """The store's call deadlines, from the ``store_*_timeout`` settings."""
        return Deadlines(
            connect=self.store_connect_timeout,
            statement=self.store_statement_timeout,
            lock=self.store_lock_timeout,
            pool=self.store_pool_timeout,
        )

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def store_kind(self) -> StoreKind:
        return store_kind(self.resolved_database_url)
