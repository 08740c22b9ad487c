"""One batch: take up to M logs from the queue, write them into ``movement_logs``, let go of them.

The order is what makes it exactly once in the table:

1. take the items (Redis: moved atomically to this batch's processing list;
   SQL: deleted inside the transaction of step 2),
2. insert them with ``ON CONFLICT DO NOTHING`` on ``(tenant, event_id)`` and
   the batch's history row, and commit,
3. only then let go of them (Redis: delete the processing list).

A crash before 2 commits leaves the items queued (SQL) or in the processing
list, which the next batch takes over once the lease passes (Redis). A crash
between 2 and 3 makes the next batch write rows that exist: the conflict
clause skips them and they are counted as duplicates.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from conveyor.workloads.movement_logs import db
from conveyor.workloads.movement_logs.models import parse_item
from conveyor.workloads.movement_logs.queue import RedisLogQueue, SqlLogQueue

__all__ = ["BatchResult", "run_batch", "run_batches"]

log = logging.getLogger("conveyor.movement_logs")

#: (rows written so far in this batch, rows the batch holds)
Progress = Callable[[int, int], None]


@dataclass
class BatchResult:
    """What one run moved; ``duplicates`` were already stored, ``invalid`` were not movement logs."""

    batches: int = 0
    claimed: int = 0
    moved: int = 0
    duplicates: int = 0
    invalid: int = 0
    recovered: int = 0
    duration_ms: float = 0.0
    batch_ids: list[str] = field(default_factory=list)

    def add(self, other: BatchResult) -> None:
        self.batches += other.batches
        self.claimed += other.claimed
        self.moved += other.moved
        self.duplicates += other.duplicates
        self.invalid += other.invalid
        self.recovered += other.recovered
        self.batch_ids += other.batch_ids

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["duration_ms"] = round(self.duration_ms, 2)
        return out


def _rows(items: list[str], now: float) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    bad: list[str] = []
    for raw in items:
        row = parse_item(raw, now=now)
        if row is None:
            bad.append(raw)
        else:
            rows.append(row)
    return rows, bad


def _write_pg(
    conn: sa.Connection,
    items: list[str],
    batch_id: str,
    chunk_size: int,
    on_chunk: Callable[[int], None],
    now: float,
    recovered: bool,
) -> tuple[int, int, list[str]]:
    """(valid, inserted, rejected) of one batch on PostgreSQL.

    A fresh batch is COPYed straight into the table (``db.copy_new_items_pg``);
    if the table refuses any row of it (an event id already stored, an item
    that is not what it claims), the COPY is rolled back to a savepoint and
    the batch is written the careful way: every item checked here, the bad
    ones set aside, stored ids skipped. A batch taken over from a dead
    worker goes the careful way at once: its rows may be stored already.
    """
    import psycopg

    if not recovered:
        savepoint = conn.begin_nested()
        try:
            moved, bad = db.copy_new_items_pg(
                conn,
                items,
                batch_id=batch_id,
                stored_at=time.time(),
                parse=lambda raw: parse_item(raw, now=now),
                chunk_size=chunk_size,
                on_chunk=on_chunk,
            )
        except (sa.exc.DBAPIError, psycopg.Error, UnicodeError) as e:
            log.info("batch %s: the table refused the plain COPY (%s); writing it row by row", batch_id, e)
            savepoint.rollback()
        else:
            savepoint.commit()
            return moved, moved, bad
    rows, bad = _rows(items, now)
    moved = db.write_rows(
        conn, rows, batch_id=batch_id, stored_at=time.time(), chunk_size=chunk_size, on_chunk=on_chunk
    )
    return len(rows), moved, bad


def run_batch(
    engine: sa.Engine,
    queue: RedisLogQueue | SqlLogQueue,
    *,
    max_items: int,
    chunk_size: int = 1000,
    task_id: str | None = None,
    progress: Progress | None = None,
) -> BatchResult:
    """Move one batch of at most ``max_items`` logs (more if it takes over a dead worker's batch)."""
    started = time.time()
    t0 = time.perf_counter()
    batch_id = str(uuid.uuid4())
    if isinstance(queue, RedisLogQueue):
        claim = queue.claim(batch_id, max_items)
        if not claim.items:
            return BatchResult(duration_ms=(time.perf_counter() - t0) * 1000)
        rows: list[dict[str, Any]] = []
        recovered = claim.recovered
        if recovered:
            log.warning("batch %s took over %d logs of a batch whose worker stopped", batch_id, len(claim.items))

        def chunk_done(done: int) -> None:
            queue.renew(batch_id)  # still alive: nobody takes these over meanwhile
            if progress is not None:
                progress(done, len(claim.items))

        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                valid, moved, bad = _write_pg(conn, claim.items, batch_id, chunk_size, chunk_done, started, recovered)
                rows = [{}] * valid  # only their number is used from here on
            else:
                rows, bad = _rows(claim.items, started)
                moved = db.write_rows(
                    conn, rows, batch_id=batch_id, stored_at=time.time(), chunk_size=chunk_size, on_chunk=chunk_done
                )
            result = _finish(
                conn, batch_id, task_id, "redis", started, t0, len(claim.items), len(rows), moved, bad, recovered
            )
        # Committed: only now may the items leave Redis. A failure here is safe (see the module doc).
        queue.bury(bad)
        queue.ack(batch_id)
        return result
    with engine.begin() as conn:
        items = queue.take(conn, max_items)
        if not items:
            return BatchResult(duration_ms=(time.perf_counter() - t0) * 1000)
        rows, bad = _rows(items, started)
        if bad:
            # The SQL queue is only written by this API, so this does not happen; keep them readable if it does.
            log.error("batch %s: %d queue rows are not movement logs and were dropped", batch_id, len(bad))
        moved = db.write_rows(
            conn,
            rows,
            batch_id=batch_id,
            stored_at=time.time(),
            chunk_size=chunk_size,
            on_chunk=(lambda done: progress(done, len(rows))) if progress is not None else None,
        )
        return _finish(conn, batch_id, task_id, "sql", started, t0, len(items), len(rows), moved, bad, False)


def _finish(
    conn: sa.Connection,
    batch_id: str,
    task_id: str | None,
    backend: str,
    started: float,
    t0: float,
    claimed: int,
    valid: int,
    moved: int,
    bad: list[str],
    recovered: bool,
) -> BatchResult:
    result = BatchResult(
        batches=1,
        claimed=claimed,
        moved=moved,
        duplicates=valid - moved,
        invalid=len(bad),
        recovered=int(recovered),
        duration_ms=(time.perf_counter() - t0) * 1000,
        batch_ids=[batch_id],
    )
    db.record_batch(
        conn,
        id=batch_id,
        task_id=task_id,
        backend=backend,
        started_at=started,
        finished_at=time.time(),
        claimed=claimed,
        moved=moved,
        duplicates=result.duplicates,
        invalid=result.invalid,
        recovered=int(recovered),
    )
    return result


def run_batches(
    engine: sa.Engine,
    queue: RedisLogQueue | SqlLogQueue,
    *,
    max_items: int,
    max_batches: int = 1,
    chunk_size: int = 1000,
    task_id: str | None = None,
    progress: Callable[[BatchResult, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> BatchResult:
    """Up to ``max_batches`` batches, stopping early when the queue is empty."""
    t0 = time.perf_counter()
    total = BatchResult()
    for _ in range(max_batches):
        if should_stop is not None and should_stop():
            break
        one = run_batch(
            engine,
            queue,
            max_items=max_items,
            chunk_size=chunk_size,
            task_id=task_id,
            progress=(lambda done, of: progress(total, done, of)) if progress is not None else None,
        )
        if one.batches == 0:
            break
        total.add(one)
    total.duration_ms = (time.perf_counter() - t0) * 1000
    return total
