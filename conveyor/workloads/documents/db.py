"""Every read and write of the documents tables, in one place (routes and tasks both use it).

Callers pass the engine: the API takes it from its own app's store, a task
from its worker process's resources.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from conveyor.records import Status, TaskRecord
from conveyor.workloads.documents.tables import chunks_table, documents_table

__all__ = [
    "delete",
    "failure_of",
    "find",
    "insert",
    "mark_failed",
    "processing",
    "reconcile",
    "search",
    "update",
    "usage",
]

d = documents_table.c


def find(engine: sa.Engine, document_id: str, tenant: str | None = None) -> sa.Row[Any] | None:
    """The document, or None if it does not exist or belongs to another tenant."""
    cond = [d.id == document_id] + ([d.tenant == tenant] if tenant is not None else [])
    with engine.connect() as conn:
        return conn.execute(documents_table.select().where(*cond)).first()


def usage(engine: sa.Engine, tenant: str) -> int:
    """Bytes of uploads the tenant holds."""
    with engine.connect() as conn:
        used = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(d.size_bytes), 0)).where(d.tenant == tenant))
        return int(used.scalar_one())


def insert(engine: sa.Engine, **values: Any) -> None:
    t = time.time()
    values.setdefault("created_at", t)
    values.setdefault("updated_at", t)
    with engine.begin() as conn:
        conn.execute(documents_table.insert().values(**values))


def update(engine: sa.Engine, document_id: str, **values: Any) -> int:
    """Set fields of one document; returns how many rows changed (0 once it is deleted)."""
    values["updated_at"] = time.time()
    with engine.begin() as conn:
        return conn.execute(documents_table.update().where(d.id == document_id).values(**values)).rowcount


def mark_failed(engine: sa.Engine, document_id: str, message: str, *, only_if_processing: bool = False) -> bool:
    """``failed`` with ``message``; with ``only_if_processing``, a finished document keeps its outcome."""
    t = time.time()
    cond = [d.id == document_id] + ([d.status == "processing"] if only_if_processing else [])
    with engine.begin() as conn:
        changed = conn.execute(
            documents_table.update()
            .where(*cond)
            .values(status="failed", error_message=message[:2000], processing_completed_at=t, updated_at=t)
        ).rowcount
    return bool(changed)


def delete(engine: sa.Engine, document_id: str) -> None:
    """The document row first, then its chunks, in one transaction.

    In that order a task finishing at the same moment cannot leave chunks
    behind: its own transaction holds the document row until it commits, and
    the chunk delete runs after.
    """
    with engine.begin() as conn:
        conn.execute(documents_table.delete().where(d.id == document_id))
        conn.execute(chunks_table.delete().where(chunks_table.c.document_id == document_id))


def failure_of(row: sa.Row[Any], task: TaskRecord | None) -> str | None:
    """Why a ``processing`` document can no longer finish, or None while it still can.

    Its task ended without marking it (the worker died past its retries, the
    hard time limit killed it, it was cancelled before it started), or the
    task's record is gone.
    """
    if row.status != "processing" or not row.task_id:
        return None
    if task is None:
        return "processing failed: its task's record no longer exists"
    if task.state is Status.FAILURE:
        error = (task.error or {}).get("message") or task.message or "unknown error"
        return f"processing failed: {error}"
    if task.state is Status.CANCELLED:
        return "processing was cancelled"
    return None


def reconcile(engine: sa.Engine, row: sa.Row[Any], task: TaskRecord | None) -> sa.Row[Any]:
    """The document as its task's outcome says it is, written back so lists and filters agree."""
    message = failure_of(row, task)
    if message is None:
        return row
    mark_failed(engine, row.id, message, only_if_processing=True)
    fresh = find(engine, row.id)
    return fresh if fresh is not None else row


def processing(engine: sa.Engine, *, limit: int = 1000) -> Sequence[sa.Row[Any]]:
    with engine.connect() as conn:
        return conn.execute(
            documents_table.select().where(d.status == "processing").order_by(d.created_at).limit(limit)
        ).all()


#: what one search may name: more words than this only repeat what the first ones ask
MAX_QUERY_TERMS = 32


def search(engine: sa.Engine, tenant: str, q: str, limit: int, document_id: str | None = None) -> list[sa.Row[Any]]:
    """The tenant's best chunks for ``q`` (any of its words), best first, at most ``limit`` rows.

    The full-text index (SQLite FTS5, PostgreSQL tsvector + GIN, migration
    documents_0002) finds and ranks the matches, and the database returns
    only ``limit`` rows, so a query never loads the tenant's corpus. Rows:
    ``document_id, idx, text, pages, filename, score`` (higher is better).
    """
    terms = _terms(q)
    if not terms:
        return []
    c = chunks_table.c
    cond = [c.tenant == tenant, d.status == "ready"] + ([c.document_id == document_id] if document_id else [])
    columns = [c.document_id, c.idx, c.text, c.pages, d.filename]
    joined = chunks_table.join(documents_table, d.id == c.document_id)
    if engine.dialect.name == "postgresql":
        tsquery = sa.func.to_tsquery("simple", " | ".join(terms))
        vector: sa.ColumnElement[Any] = sa.literal_column("conveyor_document_chunks.search_vector")
        score: sa.ColumnElement[Any] = sa.func.ts_rank_cd(vector, tsquery)
        query = sa.select(*columns, score.label("score")).select_from(joined).where(*cond, vector.op("@@")(tsquery))
    else:
        fts = sa.table("conveyor_document_chunks_fts", sa.column("rowid", sa.Integer))
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        # bm25() is lower for a better match
        score = -sa.func.bm25(sa.literal_column("conveyor_document_chunks_fts"))
        query = (
            sa.select(*columns, score.label("score"))
            .select_from(fts.join(joined, sa.literal_column("conveyor_document_chunks.search_rowid") == fts.c.rowid))
            .where(sa.literal_column("conveyor_document_chunks_fts").op("MATCH")(match), *cond)
        )
    query = query.order_by(sa.desc("score"), c.document_id, c.idx).limit(limit)
    with engine.connect() as conn:
        rows: list[sa.Row[Any]] = [*conn.execute(query)]
    return rows


def _terms(q: str) -> list[str]:
    """The query's words, lower-cased, with accents folded and as written (PostgreSQL's index keeps accents)."""
    from conveyor.workloads.documents.search import tokenize

    raw = re.findall(r"\w+", q.lower())
    return list(dict.fromkeys([*tokenize(q), *raw]))[:MAX_QUERY_TERMS]
