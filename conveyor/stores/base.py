"""The store contract: the one source of truth for every task's state.

Executors never write a task directly; they hand ``Change`` objects to a
``BufferedWriter`` which merges them and applies them in batches. Every change
is conditional: a task that already finished is never changed again, which
is what makes completion idempotent under redelivery.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.records import Status, TaskEvent, TaskRecord

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["Change", "DuplicateTask", "Page", "QueueStats", "Store", "TaskQuery", "Throughput"]

#: record fields a Change may set
CHANGE_FIELDS = frozenset(
    {
        "state",
        "progress",
        "message",
        "meta",
        "result",
        "error",
        "attempts",
        "worker",
        "lease_expires_at",
        "started_at",
        "finished_at",
        "expires_at",
        "eta",
        "expected_by",
        "updated_at",
        "cancel_requested",
    }
)


@dataclasses.dataclass(slots=True)
class Change:
    """Fields to set on one unfinished task, and the timeline steps that led there."""

    task_id: str
    fields: dict[str, Any]
    events: list[TaskEvent] = dataclasses.field(default_factory=list)

    def merge(self, later: Change) -> None:
        """Fold a later change for the same task into this one."""
        self.fields.update(later.fields)
        for event in later.events:
            last = self.events[-1] if self.events else None
            # Consecutive progress reports within one flush keep only the newest:
            # the timeline keeps every state change and the progress between them.
            if last is not None and last.kind == "progress" and event.kind == "progress":
                self.events[-1] = event
            else:
                self.events.append(event)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TaskQuery:
    tenant: str | None = None
    states: Sequence[Status] = ()
    types: Sequence[str] = ()
    queues: Sequence[str] = ()
    #: matches the start of a task id
    id_prefix: str | None = None
    limit: int = 50
    offset: int = 0
    #: newest first unless False
    newest_first: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    items: list[TaskRecord]
    total: int


@dataclasses.dataclass(frozen=True, slots=True)
class QueueStats:
    queue: str
    counts: dict[str, int]

    @property
    def depth(self) -> int:
        """Tasks waiting to run (not counting those running now)."""
        return self.counts.get("PENDING", 0) + self.counts.get("RETRY", 0)


@dataclasses.dataclass(frozen=True, slots=True)
class Throughput:
    """How many tasks finished, by final state, within one time bucket."""

    #: the bucket's start, seconds since the epoch: a multiple of the bucket size
    start: float
    success: int = 0
    failure: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.success + self.failure + self.cancelled


def bucket_start(at: float, bucket_seconds: int) -> float:
    """The start of the bucket that holds ``at`` (buckets are aligned on the epoch)."""
    return float((int(at) // bucket_seconds) * bucket_seconds)


def throughput_from_counts(counts: dict[float, dict[str, int]]) -> list[Throughput]:
    """Buckets oldest first from ``{bucket start: {final state: count}}``."""
    return [
        Throughput(
            start,
            success=per.get(Status.SUCCESS.value, 0),
            failure=per.get(Status.FAILURE.value, 0),
            cancelled=per.get(Status.CANCELLED.value, 0),
        )
        for start, per in sorted(counts.items())
    ]


class Store(Protocol):
    """Where task records live. Every method may raise StoreError when unreachable."""

    #: a short name for health reports: "sqlite", "postgresql", "redis", "memory"
    kind: str

    @property
    def engine(self) -> Engine | None:
        """The SQLAlchemy engine of a SQL store (workloads keep their own tables there); None elsewhere."""

    def open(self) -> None:
        """Connect and make sure the schema is current."""

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connections (they stay the parent's)."""

    def close(self) -> None: ...

    def ping(self) -> None:
        """Raise StoreError unless the store answers."""

    def insert(self, records: Sequence[TaskRecord]) -> None:
        """Write new records. A clash on (tenant, idempotency_key) raises DuplicateTask."""

    def get(self, task_id: str) -> TaskRecord | None: ...

    async def aget(self, task_id: str) -> TaskRecord | None:
        """``get`` for a caller on an event loop, made in the way that blocks the loop least."""
        ...

    def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord]: ...

    def find_by_idempotency_key(self, tenant: str, key: str) -> TaskRecord | None: ...

    def query(self, query: TaskQuery) -> Page: ...

    def apply(self, changes: Sequence[Change]) -> set[str]:
        """Apply changes to tasks that are not finished; returns the ids they applied to.

        A change to a finished (or unknown) task is dropped whole, its timeline
        steps included: a finished task's timeline ends with its outcome.
        """

    def events(self, task_id: str, after_seq: int = 0) -> list[TaskEvent]: ...

    async def aevents(self, task_id: str, after_seq: int = 0) -> list[TaskEvent]:
        """``events`` for a caller on an event loop (a live stream), made as ``aget`` is."""
        ...

    def cancel_waiting(self, task_id: str, at: float) -> TaskRecord | None:
        """PENDING or RETRY → CANCELLED in one step; None if the task was not waiting."""

    def request_cancel(self, task_id: str) -> bool:
        """Flag a running task; its worker stops it. False if it had finished."""

    def reset(
        self,
        task_id: str,
        fields: dict[str, Any],
        from_states: Sequence[Status],
        event: TaskEvent | None = None,
    ) -> TaskRecord | None:
        """Set ``fields`` if the task is in one of ``from_states``, with ``event`` on its timeline, in one
        write (a requeue, a retry, a move to another executor); None when the task was not in those states."""

    def claim(
        self,
        task_ids: Sequence[str],
        worker: str,
        lease_until: float,
        *,
        at: float | None = None,
        dead_workers: Sequence[str] = (),
    ) -> list[TaskRecord]:
        """Take unfinished tasks for ``worker`` that are still recoverable; returns those it got.

        Recoverable as ``recoverable`` means it: no lease, a lease lapsed
        before ``at`` (default: now), or a holder among ``dead_workers``.
        Checked in the same step as the take, so of two claimers only one
        gets a task.
        """

    def start_run(self, task_id: str, worker: str, lease_until: float, at: float) -> TaskRecord | None:
        """Claim a task for running: PENDING or RETRY, or PROCESSING whose lease lapsed.

        Sets PROCESSING, the holder, the lease, ``attempts + 1`` and a timeline
        step in one atomic step; None when someone else holds it, it finished,
        or it is unknown. A worker that gets None drops its message.
        """

    def renew_leases(self, worker: str, until: float) -> int:
        """Extend every unfinished task held by ``worker``."""

    def recoverable(
        self,
        executor: str,
        at: float,
        dead_workers: Sequence[str] = (),
        limit: int = 1000,
        states: Sequence[Status] = (),
    ) -> list[TaskRecord]:
        """Unfinished tasks of ``executor`` with no live holder: lease expired, or held by a dead worker.

        ``states`` narrows the search to some unfinished states (all of them when empty).
        """

    def overdue(self, executor: str, at: float, limit: int = 1000) -> list[TaskRecord]:
        """PENDING tasks of ``executor`` whose ``expected_by`` is before ``at``, the longest overdue first."""

    def count_unfinished(self, tenant: str) -> int: ...

    def queue_stats(self) -> list[QueueStats]: ...

    def purge_expired(self, at: float, limit: int = 10_000) -> int:
        """Delete finished records whose expiry passed; returns how many."""

    def throughput(self, tenant: str | None, since: float, bucket_seconds: int) -> list[Throughput]:
        """Tasks of ``tenant`` (every tenant: None) that finished at or after ``since``, per bucket.

        Only buckets in which something finished are returned, oldest first;
        each bucket starts on a multiple of ``bucket_seconds``.
        """

    def held_by(self, worker_prefix: str) -> list[str]:
        """Distinct worker ids starting with ``worker_prefix`` that hold unfinished tasks."""


class DuplicateTask(Exception):
    """An insert hit an existing (tenant, idempotency_key)."""
