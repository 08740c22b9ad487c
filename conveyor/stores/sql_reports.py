"""The SQL store's reads that serve reports and recovery: lists, counts, queue and throughput figures,
the records a recovery or the Celery reaper takes back. ``SqlStore`` inherits them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from conveyor.records import FINAL_STATES, UNFINISHED_STATES, Status, TaskEvent, TaskRecord
from conveyor.stores.base import Page, QueueStats, TaskQuery, Throughput, throughput_from_counts
from conveyor.stores.sql_schema import event_from_row, events_table, tasks_table
from conveyor.stores.sql_schema import record_from_row as _record

__all__ = ["SqlReports", "lapsed_holder"]

_FINAL = [s.value for s in FINAL_STATES]
_UNFINISHED = [s.value for s in UNFINISHED_STATES]


def lapsed_holder(at: float, dead_workers: Sequence[str]) -> Any:
    """No lease, a lapsed one, or a dead holder's.

    A record with no holder but a lease in the future (a Celery retry waiting
    for its countdown) is not recoverable yet.
    """
    t = tasks_table.c
    gone = sa.or_(t.lease_expires_at.is_(None), t.lease_expires_at < at)
    if dead_workers:
        gone = sa.or_(gone, t.worker.in_(list(dead_workers)))
    return gone


class SqlReports:
    """Read-only queries of the SQL store (the store provides ``kind`` and ``_read``)."""

    kind: str
    _read: Callable[[], contextlib.AbstractContextManager[sa.Connection]]

    def query(self, query: TaskQuery) -> Page:
        t = tasks_table.c
        conditions: list[Any] = []
        if query.tenant is not None:
            conditions.append(t.tenant == query.tenant)
        if query.states:
            conditions.append(t.state.in_([Status(s).value for s in query.states]))
        if query.types:
            conditions.append(t.type.in_(list(query.types)))
        if query.queues:
            conditions.append(t.queue.in_(list(query.queues)))
        if query.id_prefix:
            conditions.append(t.id.startswith(query.id_prefix, autoescape=True))
        order = t.created_at.desc() if query.newest_first else t.created_at.asc()
        with self._read() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(tasks_table).where(*conditions)).scalar_one()
            rows = conn.execute(
                tasks_table.select().where(*conditions).order_by(order, t.id).limit(query.limit).offset(query.offset)
            ).all()
        return Page([_record(r) for r in rows], int(total))

    def count_unfinished(self, tenant: str) -> int:
        t = tasks_table.c
        with self._read() as conn:
            n = conn.execute(
                sa.select(sa.func.count()).select_from(tasks_table).where(t.tenant == tenant, t.state.in_(_UNFINISHED))
            ).scalar_one()
        return int(n)

    def queue_stats(self) -> list[QueueStats]:
        t = tasks_table.c
        with self._read() as conn:
            rows = conn.execute(sa.select(t.queue, t.state, sa.func.count()).group_by(t.queue, t.state)).all()
        counts: dict[str, dict[str, int]] = {}
        for queue, state, n in rows:
            counts.setdefault(queue, {})[state] = int(n)
        return [QueueStats(q, c) for q, c in sorted(counts.items())]

    def throughput(self, tenant: str | None, since: float, bucket_seconds: int) -> list[Throughput]:
        t = tasks_table.c
        size = max(1, int(bucket_seconds))
        scaled = t.finished_at / sa.literal(float(size))
        # Bucket numbers, not times, are grouped: floor() is PostgreSQL's; SQLite
        # has no floor() in every build, and its CAST truncates, the same for positive times.
        number = sa.cast(scaled, sa.Integer) if self.kind == "sqlite" else sa.cast(sa.func.floor(scaled), sa.BigInteger)
        bucket = number.label("bucket")
        conditions: list[Any] = [t.finished_at >= since, t.state.in_(_FINAL)]
        if tenant is not None:
            conditions.append(t.tenant == tenant)
        with self._read() as conn:
            rows = conn.execute(
                sa.select(bucket, t.state, sa.func.count()).where(*conditions).group_by(bucket, t.state)
            ).all()
        counts: dict[float, dict[str, int]] = {}
        for number_, state, n in rows:
            counts.setdefault(float(int(number_) * size), {})[state] = int(n)
        return throughput_from_counts(counts)

    def held_by(self, worker_prefix: str) -> list[str]:
        t = tasks_table.c
        with self._read() as conn:
            rows = conn.execute(
                sa.select(t.worker)
                .distinct()
                .where(t.worker.startswith(worker_prefix, autoescape=True), t.state.in_(_UNFINISHED))
            ).all()
        return sorted(r[0] for r in rows)

    def recoverable(
        self,
        executor: str,
        at: float,
        dead_workers: Sequence[str] = (),
        limit: int = 1000,
        states: Sequence[Status] = (),
    ) -> list[TaskRecord]:
        t = tasks_table.c
        gone = lapsed_holder(at, dead_workers)
        with self._read() as conn:
            rows = conn.execute(
                tasks_table.select()
                .where(t.executor == executor, t.state.in_([Status(x).value for x in states] or _UNFINISHED), gone)
                .order_by(t.created_at)
                .limit(limit)
            ).all()
        return [_record(r) for r in rows]

    def overdue(self, executor: str, at: float, limit: int = 1000) -> list[TaskRecord]:
        t = tasks_table.c
        with self._read() as conn:
            rows = conn.execute(
                tasks_table.select()
                .where(t.state == Status.PENDING.value, t.expected_by < at, t.executor == executor)
                .order_by(t.expected_by)
                .limit(limit)
            ).all()
        return [_record(r) for r in rows]

    def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        if not task_ids:
            return []
        with self._read() as conn:
            rows = conn.execute(tasks_table.select().where(tasks_table.c.id.in_(list(task_ids)))).all()
        return [_record(r) for r in rows]

    def find_by_idempotency_key(self, tenant: str, key: str) -> TaskRecord | None:
        t = tasks_table.c
        with self._read() as conn:
            row = conn.execute(tasks_table.select().where(t.tenant == tenant, t.idempotency_key == key)).first()
        return _record(row) if row is not None else None

    def events(self, task_id: str, after_seq: int = 0) -> list[TaskEvent]:
        e = events_table.c
        with self._read() as conn:
            rows = conn.execute(
                events_table.select().where(e.task_id == task_id, e.seq > after_seq).order_by(e.seq)
            ).all()
        return [event_from_row(r) for r in rows]
