"""The SQL store's claims and leases: who runs a task, and for how long. ``SqlStore`` inherits them.

A claim is conditional on the previous holder being gone, checked in the
statement itself, so two replicas recovering together never both run a task.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from conveyor.records import UNFINISHED_STATES, TaskRecord, now
from conveyor.stores.deadlines import Deadlines
from conveyor.stores.sql_reports import lapsed_holder
from conveyor.stores.sql_schema import claim_statements, create_engine_for, tasks_table
from conveyor.stores.sql_schema import record_from_row as _record

__all__ = ["SqlLeases"]

_T = TypeVar("_T")
_UNFINISHED = [s.value for s in UNFINISHED_STATES]
_CLAIM, _CLAIM_STEP, _CLAIM_PG = claim_statements()


class SqlLeases:
    """Claims, run starts and lease renewals of the SQL store (the store provides its engines and writes)."""

    kind: str
    url: str
    deadlines: Deadlines
    _claims: Engine | None
    _write: Callable[[], contextlib.AbstractContextManager[sa.Connection]]
    _upkeep_write: Callable[[], contextlib.AbstractContextManager[sa.Connection]]

    def _autocommit(self, run: Callable[[sa.Connection], _T], engine: Engine | None = None) -> _T:
        raise NotImplementedError  # the store's

    def claim(
        self,
        task_ids: Sequence[str],
        worker: str,
        lease_until: float,
        *,
        at: float | None = None,
        dead_workers: Sequence[str] = (),
    ) -> list[TaskRecord]:
        if not task_ids:
            return []
        t = tasks_table.c
        # Only while still recoverable, checked in the UPDATE itself: of two
        # replicas recovering the same task at once, the second finds the
        # first's fresh lease (PostgreSQL re-reads a row it waited for) and
        # gets nothing.
        gone = lapsed_holder(now() if at is None else at, dead_workers)
        with self._write() as conn:
            rows = conn.execute(
                tasks_table.update()
                .where(t.id.in_(list(task_ids)), t.state.in_(_UNFINISHED), gone)
                .values(worker=worker, lease_expires_at=lease_until)
                .returning(*tasks_table.c)
            ).all()
        return [_record(r) for r in rows]

    def start_run(self, task_id: str, worker: str, lease_until: float, at: float) -> TaskRecord | None:
        values = {"p_task_id": task_id, "p_worker": worker, "p_lease_until": lease_until, "p_at": at}
        if self.kind == "postgresql":
            # Once per task on every Celery worker: one statement (claim, timeline
            # step, row read back) built once, on an autocommit connection that
            # is not pinged first. A connection the server dropped fails the
            # statement; it is replaced and the claim is tried once more.
            row = self._autocommit(lambda conn: conn.execute(_CLAIM_PG, values).first(), self._claim_engine())
            return _record(row) if row is not None else None
        with self._write() as conn:
            row = conn.execute(_CLAIM, values).first()  # RETURNING: SQLite >= 3.35
            if row is None:
                return None
            conn.execute(_CLAIM_STEP, values)
        return _record(row)

    def _claim_engine(self) -> Engine:
        if self._claims is None:
            # A claim's commit does not wait for the WAL to reach the disk: if the
            # server crashed before it did, the task would be PENDING again while
            # its message is still held by the worker running it, whose outcome
            # (written with a durable commit) still lands once. Nothing is lost
            # or run twice for it, and the claim no longer waits for an fsync.
            self._claims = create_engine_for(
                self.url,
                self.deadlines,
                isolation_level="AUTOCOMMIT",
                pool_pre_ping=False,
                pool_size=2,
                max_overflow=8,
                server_options=("-c synchronous_commit=off",),
            )
        return self._claims

    def renew_leases(self, worker: str, until: float) -> int:
        t = tasks_table.c
        held = sa.and_(t.worker == worker, t.state.in_(_UNFINISHED))
        if self.kind != "sqlite":
            # In id order, as the writer's batches lock them: a plain UPDATE
            # locks in scan order and can deadlock with a batch.
            ordered = sa.select(t.id).where(held).order_by(t.id).with_for_update()
            held = t.id.in_(ordered)
        with self._upkeep_write() as conn:
            result = conn.execute(tasks_table.update().where(held).values(lease_expires_at=until))
        return int(result.rowcount)
