"""Every read and write of ``correction_tasks``, in one place (routes and the task both use it)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from conveyor.records import Status, TaskRecord
from conveyor.workloads.media.tables import correction_tasks

__all__ = ["claim", "delete", "find", "finish", "insert", "listing", "reconcile", "set_job", "update"]

c = correction_tasks.c
FINAL = ("SUCCESS", "FAILURE", "CANCELLED")


def find(engine: sa.Engine, task_id: str, tenant: str | None = None) -> sa.Row[Any] | None:
    """The correction, or None if there is none or it is another tenant's."""
    cond = [c.task_id == task_id] + ([c.tenant == tenant] if tenant is not None else [])
    with engine.connect() as conn:
        return conn.execute(correction_tasks.select().where(*cond)).first()


def insert(engine: sa.Engine, **values: Any) -> None:
    t = time.time()
    values.setdefault("created_at", t)
    values.setdefault("updated_at", t)
    values.setdefault("status", "PENDING")
    values.setdefault("progress", 0.0)
    values.setdefault("message", "Queued")
    with engine.begin() as conn:
        conn.execute(correction_tasks.insert().values(**values))


def set_job(engine: sa.Engine, task_id: str, job_id: str) -> None:
    """Link the row to its task record, unless the task got there first."""
    with engine.begin() as conn:
        conn.execute(correction_tasks.update().where(c.task_id == task_id, c.job_id.is_(None)).values(job_id=job_id))


def claim(engine: sa.Engine, task_id: str, tenant: str, job_id: str, **values: Any) -> sa.Row[Any] | None:
    """Mark the correction PROCESSING for this run, making its row if the caller gave only an id.

    ``process_correction.delay(task_id, ...)`` from Python has no row yet, as
    in seed 000 where the worker updates a record by id. Returns the row, or
    None when the id belongs to another tenant.
    """
    t = time.time()
    with engine.begin() as conn:
        row = conn.execute(correction_tasks.select().where(c.task_id == task_id).with_for_update()).first()
        if row is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        correction_tasks.insert().values(
                            task_id=task_id, tenant=tenant, job_id=job_id, status="PROCESSING", progress=0.0,
                            message="Started", created_at=t, updated_at=t, started_at=t, **values,
                        )
                    )  # fmt: skip
            except sa.exc.IntegrityError:
                pass  # the route's insert won a race: update it below
            row = conn.execute(correction_tasks.select().where(c.task_id == task_id)).first()
        if row is None or row.tenant != tenant:
            return None
        conn.execute(
            correction_tasks.update()
            .where(c.task_id == task_id)
            .values(
                status="PROCESSING", job_id=job_id, message="Started", started_at=row.started_at or t, updated_at=t,
                error_message=None, result=None,
            )
        )  # fmt: skip
        return conn.execute(correction_tasks.select().where(c.task_id == task_id)).first()


def update(engine: sa.Engine, task_id: str, **values: Any) -> int:
    values["updated_at"] = time.time()
    with engine.begin() as conn:
        return conn.execute(correction_tasks.update().where(c.task_id == task_id).values(**values)).rowcount


def finish(
    engine: sa.Engine,
    task_id: str,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    message: str = "",
    job_id: str | None = None,
) -> bool:
    """The outcome, written once: a row already final keeps its first outcome."""
    t = time.time()
    cond = [c.task_id == task_id, c.status.notin_(FINAL)] + ([c.job_id == job_id] if job_id else [])
    values: dict[str, Any] = {"status": status, "completed_at": t, "updated_at": t, "message": message or status}
    if status == "SUCCESS":
        values["progress"] = 100.0
    if result is not None:
        values["result"] = result
    if error is not None:
        values["error_message"] = error[:4000]
    with engine.begin() as conn:
        return bool(conn.execute(correction_tasks.update().where(*cond).values(**values)).rowcount)


def delete(engine: sa.Engine, task_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(correction_tasks.delete().where(c.task_id == task_id))


def listing(
    engine: sa.Engine, tenant: str, *, status: str | None, media_type: str | None, limit: int, offset: int
) -> tuple[int, Sequence[sa.Row[Any]]]:
    cond = [c.tenant == tenant]
    if status:
        cond.append(c.status == status)
    if media_type:
        cond.append(c.media_type == media_type)
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(correction_tasks).where(*cond)).scalar_one()
        rows = conn.execute(
            correction_tasks.select().where(*cond).order_by(c.created_at.desc(), c.task_id).limit(limit).offset(offset)
        ).all()
    return int(total), rows


_OUTCOME = {Status.FAILURE: "FAILURE", Status.CANCELLED: "CANCELLED"}


def reconcile(engine: sa.Engine, row: sa.Row[Any], task: TaskRecord | None) -> sa.Row[Any]:
    """A row whose task ended without writing it (killed past its retries, cancelled before it
    started, its record expired) gets that outcome written back, so lists and filters agree."""
    if row.status in FINAL or not row.job_id:
        return row
    if task is None:
        finish(engine, row.task_id, "FAILURE", error="the correction's task record no longer exists")
    elif task.state in _OUTCOME:
        error = (task.error or {}).get("message") or task.message or "the task failed"
        if task.state is Status.CANCELLED:
            error = "the correction was cancelled"
        finish(engine, row.task_id, _OUTCOME[task.state], error=error, message=task.message)
    else:
        return row
    fresh = find(engine, row.task_id)
    return fresh if fresh is not None else row
