"""Task records: what the store keeps about one submitted run."""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

__all__ = [
    "FINAL_STATES",
    "RECORD_FIELDS",
    "UNFINISHED_STATES",
    "Status",
    "TaskEvent",
    "TaskRecord",
    "new_task_id",
    "now",
]


class Status(StrEnum):
    """The state of a task. These strings are part of the HTTP API."""

    #: accepted and written to the store, waiting for a worker
    PENDING = "PENDING"
    #: a worker is running it (progress and message move)
    PROCESSING = "PROCESSING"
    #: an attempt failed; it waits for its backoff before running again
    RETRY = "RETRY"
    #: finished; ``result`` holds what the function returned
    SUCCESS = "SUCCESS"
    #: finished with an error (``error`` says why); retries are spent
    FAILURE = "FAILURE"
    #: stopped on request, before or while running
    CANCELLED = "CANCELLED"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({Status.SUCCESS, Status.FAILURE, Status.CANCELLED})
UNFINISHED_STATES = frozenset({Status.PENDING, Status.PROCESSING, Status.RETRY})


def now() -> float:
    """Wall-clock time as the store keeps it: seconds since the epoch (UTC)."""
    return time.time()


def new_task_id() -> str:
    """A UUID in the version-7 layout: 48 bits of milliseconds, then random bits.

    Ids sort by creation time, and B-tree inserts land at the end of the
    primary-key index instead of at random pages (fewer pages written per insert).
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | (((rand >> 62) & 0xFFF) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    """One submitted run of a task type. Immutable: changes make a new record."""

    id: str
    type: str
    queue: str = "default"
    tenant: str = "local"
    state: Status = Status.PENDING
    progress: float = 0.0
    message: str = ""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    result: Any = None
    #: ``{"type", "message", "traceback"}`` when the task failed
    error: dict[str, Any] | None = None
    attempts: int = 0
    max_retries: int = 0
    priority: int = 0
    idempotency_key: str | None = None
    #: which executor owns the run: "local" or "celery"
    executor: str = "local"
    #: who holds the run now, and until when that claim holds without renewal
    worker: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    #: not before this time (delayed submit, retry backoff)
    eta: float | None = None
    #: a PENDING Celery task not started by then has probably lost its message (a broker
    #: restart, a worker that died holding it): the reaper sends it again
    expected_by: float | None = None
    created_at: float = dataclasses.field(default_factory=now)
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    updated_at: float = dataclasses.field(default_factory=now)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def result_available(self) -> bool:
        return self.state is Status.SUCCESS

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else now()
        return max(0.0, end - self.started_at)

    def replace(self, **changes: Any) -> TaskRecord:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[Any, Any]) -> TaskRecord:
        """A record from stored values (a SQL row's mapping, a Redis hash): unknown keys ignored."""
        values = {k: data[k] for k in RECORD_FIELDS if k in data}
        values["state"] = Status(values.get("state", Status.PENDING))
        for name in ("meta", "params"):
            if values.get(name) is None:
                values[name] = {}
        if "cancel_requested" in values:
            values["cancel_requested"] = bool(values["cancel_requested"])
        return cls(**values)


#: every field of a record, in declaration order: the SQL columns and the Redis hash fields
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TaskRecord))


@dataclasses.dataclass(frozen=True, slots=True)
class TaskEvent:
    """One step on a task's timeline: a state change or a progress report."""

    task_id: str
    at: float
    state: Status
    progress: float
    message: str
    #: "state" for a change of state, "progress" for a report within one
    kind: str = "progress"
    seq: int = 0
