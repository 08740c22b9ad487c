"""An in-memory store: for tests and throwaway runs. Nothing survives the process."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import Any

from conveyor.records import FINAL_STATES, UNFINISHED_STATES, Status, TaskEvent, TaskRecord, now
from conveyor.stores.base import (
    Change,
    DuplicateTask,
    Page,
    QueueStats,
    TaskQuery,
    Throughput,
    bucket_start,
    throughput_from_counts,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    kind = "memory"
    engine = None

    def after_fork(self) -> None:
        """Nothing to forget: a forked child keeps the (copied) records, as a test's fork expects."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tasks: dict[str, TaskRecord] = {}
        self._events: dict[str, list[TaskEvent]] = {}
        self._idempotency: dict[tuple[str, str], str] = {}
        self._seq = 0

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def ping(self) -> None:
        pass

    def insert(self, records: Sequence[TaskRecord]) -> None:
        with self._lock:
            for r in records:
                if r.idempotency_key is not None and (r.tenant, r.idempotency_key) in self._idempotency:
                    raise DuplicateTask(r.idempotency_key)
            for r in records:
                self._tasks[r.id] = r
                if r.idempotency_key is not None:
                    self._idempotency[(r.tenant, r.idempotency_key)] = r.id

    def get(self, task_id: str) -> TaskRecord | None:
        return self._tasks.get(task_id)

    async def aget(self, task_id: str) -> TaskRecord | None:
        return self._tasks.get(task_id)

    def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        return [r for r in (self._tasks.get(i) for i in task_ids) if r is not None]

    def find_by_idempotency_key(self, tenant: str, key: str) -> TaskRecord | None:
        task_id = self._idempotency.get((tenant, key))
        return self._tasks.get(task_id) if task_id else None

    def query(self, query: TaskQuery) -> Page:
        with self._lock:
            items = [r for r in self._tasks.values() if _matches(r, query)]
        items.sort(key=lambda r: r.created_at, reverse=query.newest_first)
        return Page(items[query.offset : query.offset + query.limit], len(items))

    def apply(self, changes: Sequence[Change]) -> set[str]:
        applied: set[str] = set()
        with self._lock:
            for change in changes:
                current = self._tasks.get(change.task_id)
                if current is None or current.state in FINAL_STATES:
                    continue
                applied.add(change.task_id)
                fields = dict(change.fields)
                if "state" in fields:
                    fields["state"] = Status(fields["state"])
                self._tasks[change.task_id] = dataclasses.replace(current, **fields)
                for event in change.events:
                    self._seq += 1
                    self._events.setdefault(change.task_id, []).append(dataclasses.replace(event, seq=self._seq))
        return applied

    def events(self, task_id: str, after_seq: int = 0) -> list[TaskEvent]:
        return [e for e in self._events.get(task_id, []) if e.seq > after_seq]

    async def aevents(self, task_id: str, after_seq: int = 0) -> list[TaskEvent]:
        return self.events(task_id, after_seq)

    def cancel_waiting(self, task_id: str, at: float) -> TaskRecord | None:
        with self._lock:
            r = self._tasks.get(task_id)
            if r is None or r.state not in (Status.PENDING, Status.RETRY):
                return None
            change = Change(
                task_id,
                {"state": Status.CANCELLED, "finished_at": at, "updated_at": at, "message": "Cancelled"},
                [TaskEvent(task_id, at, Status.CANCELLED, r.progress, "Cancelled", kind="state")],
            )
            self.apply([change])
            return self._tasks[task_id]

    def request_cancel(self, task_id: str) -> bool:
        with self._lock:
            r = self._tasks.get(task_id)
            if r is None or r.state in FINAL_STATES:
                return False
            self._tasks[task_id] = r.replace(cancel_requested=True)
            return True

    def reset(
        self,
        task_id: str,
        fields: dict[str, Any],
        from_states: Sequence[Status],
        event: TaskEvent | None = None,
    ) -> TaskRecord | None:
        with self._lock:
            r = self._tasks.get(task_id)
            if r is None or r.state not in from_states:
                return None
            new = r.replace(**fields)
            self._tasks[task_id] = new
            if event is not None:
                self._seq += 1
                self._events.setdefault(task_id, []).append(dataclasses.replace(event, seq=self._seq))
            return new

    def claim(
        self,
        task_ids: Sequence[str],
        worker: str,
        lease_until: float,
        *,
        at: float | None = None,
        dead_workers: Sequence[str] = (),
    ) -> list[TaskRecord]:
        got = []
        at = now() if at is None else at
        with self._lock:
            for task_id in task_ids:
                r = self._tasks.get(task_id)
                if r is not None and r.state in UNFINISHED_STATES and _holder_gone(r, at, dead_workers):
                    self._tasks[task_id] = r = r.replace(worker=worker, lease_expires_at=lease_until)
                    got.append(r)
        return got

    def start_run(self, task_id: str, worker: str, lease_until: float, at: float) -> TaskRecord | None:
        with self._lock:
            r = self._tasks.get(task_id)
            if r is None or not _runnable(r, at):
                return None
            r = r.replace(
                state=Status.PROCESSING,
                worker=worker,
                lease_expires_at=lease_until,
                attempts=r.attempts + 1,
                started_at=at,
                updated_at=at,
                progress=0.0,
                message="Started",
                eta=None,
            )
            self._tasks[task_id] = r
            self._seq += 1
            self._events.setdefault(task_id, []).append(
                TaskEvent(task_id, at, Status.PROCESSING, 0.0, "Started", kind="state", seq=self._seq)
            )
            return r

    def renew_leases(self, worker: str, until: float) -> int:
        n = 0
        with self._lock:
            for r in list(self._tasks.values()):
                if r.worker == worker and r.state in UNFINISHED_STATES:
                    self._tasks[r.id] = r.replace(lease_expires_at=until)
                    n += 1
        return n

    def recoverable(
        self,
        executor: str,
        at: float,
        dead_workers: Sequence[str] = (),
        limit: int = 1000,
        states: Sequence[Status] = (),
    ) -> list[TaskRecord]:
        dead = set(dead_workers)
        wanted = set(states) or UNFINISHED_STATES
        with self._lock:
            found = [
                r
                for r in self._tasks.values()
                if r.executor == executor and r.state in wanted and _holder_gone(r, at, dead)
            ]
        found.sort(key=lambda r: r.created_at)
        return found[:limit]

    def overdue(self, executor: str, at: float, limit: int = 1000) -> list[TaskRecord]:
        with self._lock:
            found = [
                r
                for r in self._tasks.values()
                if r.executor == executor
                and r.state is Status.PENDING
                and r.expected_by is not None
                and r.expected_by < at
            ]
        found.sort(key=lambda r: r.expected_by or 0.0)
        return found[:limit]

    def count_unfinished(self, tenant: str) -> int:
        with self._lock:
            return sum(1 for r in self._tasks.values() if r.tenant == tenant and r.state in UNFINISHED_STATES)

    def queue_stats(self) -> list[QueueStats]:
        counts: dict[str, dict[str, int]] = {}
        with self._lock:
            for r in self._tasks.values():
                per = counts.setdefault(r.queue, {})
                per[r.state.value] = per.get(r.state.value, 0) + 1
        return [QueueStats(q, c) for q, c in sorted(counts.items())]

    def throughput(self, tenant: str | None, since: float, bucket_seconds: int) -> list[Throughput]:
        counts: dict[float, dict[str, int]] = {}
        with self._lock:
            for r in self._tasks.values():
                if r.state not in FINAL_STATES or r.finished_at is None or r.finished_at < since:
                    continue
                if tenant is not None and r.tenant != tenant:
                    continue
                per = counts.setdefault(bucket_start(r.finished_at, bucket_seconds), {})
                per[r.state.value] = per.get(r.state.value, 0) + 1
        return throughput_from_counts(counts)

    def purge_expired(self, at: float, limit: int = 10_000) -> int:
        with self._lock:
            doomed = [
                r.id
                for r in self._tasks.values()
                if r.state in FINAL_STATES and r.expires_at is not None and r.expires_at <= at
            ][:limit]
            for task_id in doomed:
                r = self._tasks.pop(task_id)
                self._events.pop(task_id, None)
                if r.idempotency_key is not None:
                    self._idempotency.pop((r.tenant, r.idempotency_key), None)
        return len(doomed)

    def held_by(self, worker_prefix: str) -> list[str]:
        with self._lock:
            return sorted(
                {
                    r.worker
                    for r in self._tasks.values()
                    if r.worker and r.worker.startswith(worker_prefix) and r.state in UNFINISHED_STATES
                }
            )


def _holder_gone(r: TaskRecord, at: float, dead_workers: Sequence[str] | set[str]) -> bool:
    return r.worker in dead_workers or (r.lease_expires_at or 0) < at


def _runnable(r: TaskRecord, at: float) -> bool:
    if r.state in (Status.PENDING, Status.RETRY):
        return True
    return r.state is Status.PROCESSING and (r.lease_expires_at or 0) < at


def _matches(r: TaskRecord, q: TaskQuery) -> bool:
    return (
        (q.tenant is None or r.tenant == q.tenant)
        and (not q.states or r.state in q.states)
        and (not q.types or r.type in q.types)
        and (not q.queues or r.queue in q.queues)
        and (not q.id_prefix or r.id.startswith(q.id_prefix))
    )
