"""Every SQL read and write of the speech workload, in one place (routes and tasks both use it)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from conveyor.workloads.speech.ratings import Rating
from conveyor.workloads.speech.tables import (
    attempts_table,
    impression_batches_table,
    impressions_pending_table,
    impressions_table,
    resources_table,
    sessions_table,
)

__all__ = [
    "add_pending_impressions",
    "apply_impression_batch",
    "attempt",
    "attempts_of",
    "create_resource",
    "create_session",
    "delete_expired_sessions",
    "find_resource",
    "flush_pending_impressions",
    "forget_impression_batches",
    "impressions_of",
    "list_resources",
    "pending_impressions_of",
    "rating_inputs",
    "resource_ids",
    "save_attempt",
    "session",
    "touch_session",
    "update_resource",
    "write_rating",
]

r = resources_table.c
a = attempts_table.c
imp = impressions_table.c
pend = impressions_pending_table.c
s = sessions_table.c


def _upsert(engine: sa.Engine | sa.Connection, table: sa.Table) -> Any:
    """The dialect's INSERT that can say ON CONFLICT (PostgreSQL and SQLite both can)."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


# -- resources ---------------------------------------------------------------


def create_resource(engine: sa.Engine, **values: Any) -> None:
    t = time.time()
    values.setdefault("created_at", t)
    values.setdefault("updated_at", t)
    with engine.begin() as conn:
        conn.execute(resources_table.insert().values(**values))


def find_resource(engine: sa.Engine, resource_id: str, tenant: str | None = None) -> sa.Row[Any] | None:
    """The resource, or None if it does not exist or belongs to another tenant."""
    cond = [r.id == resource_id] + ([r.tenant == tenant] if tenant is not None else [])
    with engine.connect() as conn:
        return conn.execute(resources_table.select().where(*cond)).first()


def update_resource(engine: sa.Engine, resource_id: str, **values: Any) -> int:
    values["updated_at"] = time.time()
    with engine.begin() as conn:
        return conn.execute(resources_table.update().where(r.id == resource_id).values(**values)).rowcount


def list_resources(engine: sa.Engine, tenant: str, *, limit: int, offset: int) -> tuple[Sequence[sa.Row[Any]], int]:
    with engine.connect() as conn:
        rows = conn.execute(
            resources_table.select()
            .where(r.tenant == tenant)
            .order_by(r.created_at.desc(), r.id)
            .limit(limit)
            .offset(offset)
        ).all()
        total = conn.execute(
            sa.select(sa.func.count()).select_from(resources_table).where(r.tenant == tenant)
        ).scalar_one()
    return rows, int(total)


def resource_ids(engine: sa.Engine, tenant: str | None = None) -> list[str]:
    cond = [r.tenant == tenant] if tenant is not None else []
    with engine.connect() as conn:
        return list(conn.execute(sa.select(r.id).where(*cond).order_by(r.id)).scalars())


# -- attempts ----------------------------------------------------------------


def save_attempt(engine: sa.Engine, attempt_id: str, **values: Any) -> None:
    """Insert or rewrite one attempt: a rerun of its task (retry, redelivery) keeps one row."""
    t = time.time()
    values["updated_at"] = t
    with engine.begin() as conn:
        stmt = _upsert(conn, attempts_table).values(id=attempt_id, created_at=t, **values)
        conn.execute(stmt.on_conflict_do_update(index_elements=[a.id], set_=values))


def attempt(engine: sa.Engine, attempt_id: str, tenant: str | None = None) -> sa.Row[Any] | None:
    cond = [a.id == attempt_id] + ([a.tenant == tenant] if tenant is not None else [])
    with engine.connect() as conn:
        return conn.execute(attempts_table.select().where(*cond)).first()


def attempts_of(
    engine: sa.Engine, resource_id: str, *, user_name: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[Sequence[sa.Row[Any]], int]:
    cond = [a.resource_id == resource_id] + ([a.user_name == user_name] if user_name is not None else [])
    with engine.connect() as conn:
        rows = conn.execute(
            attempts_table.select().where(*cond).order_by(a.created_at.desc(), a.id).limit(limit).offset(offset)
        ).all()
        total = conn.execute(sa.select(sa.func.count()).select_from(attempts_table).where(*cond)).scalar_one()
    return rows, int(total)


# -- impressions ---------------------------------------------------------------


def add_pending_impressions(engine: sa.Engine, resource_id: str, count: int) -> None:
    """The embedded counter: one atomic upsert per post, moved into the totals by a sync."""
    with engine.begin() as conn:
        stmt = _upsert(conn, impressions_pending_table).values(resource_id=resource_id, count=count)
        conn.execute(stmt.on_conflict_do_update(index_elements=[pend.resource_id], set_={"count": pend.count + count}))


def _add_to_totals(conn: sa.Connection, counts: Mapping[str, int], t: float) -> int:
    """Add counts to the synced totals; counts of resources that no longer exist are dropped."""
    if not counts:
        return 0
    owners = {row.id: row.tenant for row in conn.execute(sa.select(r.id, r.tenant).where(r.id.in_(list(counts))))}
    added = 0
    for resource_id in sorted(owners):  # one order for every sync: no deadlock between two
        n = int(counts[resource_id])
        if n <= 0:
            continue
        stmt = _upsert(conn, impressions_table).values(
            resource_id=resource_id, tenant=owners[resource_id], count=n, updated_at=t
        )
        conn.execute(
            stmt.on_conflict_do_update(index_elements=[imp.resource_id], set_={"count": imp.count + n, "updated_at": t})
        )
        added += n
    return added


def flush_pending_impressions(engine: sa.Engine) -> int:
    """Move every embedded counter into the totals in one transaction: all of it or none."""
    t = time.time()
    with engine.begin() as conn:
        taken = conn.execute(impressions_pending_table.delete().returning(pend.resource_id, pend.count)).all()
        counts: dict[str, int] = {}
        for row in taken:
            counts[row.resource_id] = counts.get(row.resource_id, 0) + int(row[1])
        return _add_to_totals(conn, counts, t)


def apply_impression_batch(engine: sa.Engine, batch_id: str, counts: Mapping[str, int]) -> bool:
    """Add one Redis batch to the totals exactly once; False if it was applied before.

    The batch's row and its counts commit in one transaction. A second sync
    holding the same batch (one that died after this commit, or one running
    at the same time) fails on the batch's primary key and adds nothing; on
    PostgreSQL it waits for the first to commit or roll back before deciding.
    """
    t = time.time()
    try:
        with engine.begin() as conn:
            total = sum(int(n) for n in counts.values())
            conn.execute(impression_batches_table.insert().values(batch_id=batch_id, total=total, applied_at=t))
            _add_to_totals(conn, counts, t)
    except IntegrityError:
        return False
    return True


def forget_impression_batches(engine: sa.Engine, before: float) -> int:
    with engine.begin() as conn:
        return conn.execute(
            impression_batches_table.delete().where(impression_batches_table.c.applied_at < before)
        ).rowcount


def impressions_of(engine: sa.Engine, resource_id: str) -> int:
    with engine.connect() as conn:
        value = conn.execute(sa.select(imp.count).where(imp.resource_id == resource_id)).scalar()
    return int(value or 0)


def pending_impressions_of(engine: sa.Engine, resource_id: str) -> int:
    with engine.connect() as conn:
        value = conn.execute(sa.select(pend.count).where(pend.resource_id == resource_id)).scalar()
    return int(value or 0)


# -- ratings -------------------------------------------------------------------


def rating_inputs(engine: sa.Engine, resource_id: str) -> tuple[list[float], int]:
    """The scores of the resource's finished attempts, and its synced impressions."""
    with engine.connect() as conn:
        scores = conn.execute(
            sa.select(a.score).where(a.resource_id == resource_id, a.status == "done", a.score.is_not(None))
        ).scalars()
        score_list = [float(x) for x in scores]
        impressions = conn.execute(sa.select(imp.count).where(imp.resource_id == resource_id)).scalar()
    return score_list, int(impressions or 0)


def write_rating(engine: sa.Engine, resource_id: str, rating: Rating) -> int:
    return update_resource(
        engine,
        resource_id,
        rating=rating.rating,
        average_score=rating.average_score,
        attempts_count=rating.attempts,
        rating_impressions=rating.impressions,
        rating_updated_at=time.time(),
    )


# -- sessions ------------------------------------------------------------------


def create_session(engine: sa.Engine, session_id: str, *, ttl: float, now: float | None = None, **values: Any) -> None:
    t = time.time() if now is None else now
    with engine.begin() as conn:
        conn.execute(
            sessions_table.insert().values(
                id=session_id, status="open", created_at=t, last_seen_at=t, expires_at=t + ttl, **values
            )
        )


def touch_session(engine: sa.Engine, session_id: str, *, ttl: float, status: str | None = None) -> None:
    t = time.time()
    values: dict[str, Any] = {"last_seen_at": t, "expires_at": t + ttl}
    if status is not None:
        values["status"] = status
    with engine.begin() as conn:
        conn.execute(sessions_table.update().where(s.id == session_id).values(**values))


def delete_expired_sessions(engine: sa.Engine, now: float) -> int:
    with engine.begin() as conn:
        return conn.execute(sessions_table.delete().where(s.expires_at < now)).rowcount


def session(engine: sa.Engine, session_id: str) -> sa.Row[Any] | None:
    with engine.connect() as conn:
        return conn.execute(sessions_table.select().where(s.id == session_id)).first()
