"""Documents search runs on the full-text index: ranked, limited, never the whole corpus; old chunks are indexed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conveyor import Settings
from conveyor.stores.sql import SqlStore
from conveyor.stores.sql_schema import MIGRATIONS
from conveyor.workloads.documents import db, workload
from conveyor.workloads.documents.tables import chunks_table

TENANT = "alpha"
INDEX = "ix_conveyor_document_chunks_search"


@pytest.fixture
def engine(sql_database_url: str) -> Iterator[sa.Engine]:
    store = SqlStore(Settings(database_url=sql_database_url).resolved_database_url, migrations=_migrations())
    store.open()
    assert store.engine is not None
    yield store.engine
    store.close()


def _migrations() -> dict[str, Path]:
    assert workload.migrations is not None
    return {"documents": workload.migrations}


def _document(engine: sa.Engine, document_id: str, texts: list[str], tenant: str = TENANT) -> None:
    db.insert(
        engine,
        id=document_id,
        tenant=tenant,
        filename=f"{document_id}.txt",
        stored_path="/nowhere",
        size_bytes=1,
        sha256="0" * 64,
        status="ready",
        processing_progress=100.0,
    )
    rows = [
        {"document_id": document_id, "idx": i, "tenant": tenant, "text": t, "tokens": 1, "char_start": 0, "char_end": 1}
        for i, t in enumerate(texts)
    ]
    with engine.begin() as conn:
        conn.execute(chunks_table.insert(), rows)


def test_search_ranks_the_best_chunk_first_within_the_tenant_and_limit(engine: sa.Engine) -> None:
    _document(engine, "d1", ["la storia di Roma antica", "il tempo", "Roma Roma e la storia di Roma"])
    _document(engine, "d2", ["storia di Roma, ma di un altro"], tenant="beta")
    hits = db.search(engine, TENANT, "storia Roma", limit=2)
    assert [(h.document_id, h.idx) for h in hits] == [("d1", 2), ("d1", 0)]
    assert hits[0].score > hits[1].score > 0
    assert db.search(engine, TENANT, "nothing here", limit=5) == []
    assert [h.idx for h in db.search(engine, TENANT, "tempo", limit=5, document_id="d1")] == [1]


def test_a_search_over_many_chunks_asks_the_index_for_its_limit_only(engine: sa.Engine) -> None:
    """The statement is a full-text index lookup with LIMIT: 20 of 3,000 chunks match, 7 rows come back."""
    _document(engine, "big", [f"common word {i}" if i % 150 == 0 else f"filler text {i}" for i in range(3000)])
    statements: list[tuple[str, Any]] = []

    def seen(conn: object, cursor: object, statement: str, parameters: Any, *args: object) -> None:
        statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        hits = db.search(engine, TENANT, "common", limit=7)
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert len(hits) == 7
    [(statement, parameters)] = [s for s in statements if "conveyor_document_chunks" in s[0]]
    assert "LIMIT" in statement
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            cursor.execute("ANALYZE conveyor_document_chunks")
        cursor.execute(
            ("EXPLAIN " if engine.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN ") + statement, parameters
        )
        plan = " ".join(str(r) for r in cursor.fetchall())
    if engine.dialect.name == "postgresql":
        # The planner picks the GIN index or the tenant's index by cost; either way the match is in SQL.
        assert "@@" in statement
        assert plan.startswith("('Limit"), plan
        with engine.connect() as conn:
            gin = conn.execute(sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"), {"n": INDEX}).scalar()
        assert gin is not None
        assert "gin (search_vector)" in gin
    else:
        assert "VIRTUAL TABLE INDEX" in plan, plan
        assert "SCAN conveyor_document_chunks " not in plan + " ", plan


def test_chunks_stored_before_the_index_existed_are_found_after_the_upgrade(
    engine: sa.Engine, sql_database_url: str
) -> None:
    _document(engine, "old", ["written before documents_0002"])
    _documents_alembic(engine, "downgrade", "documents_0001")
    _document(engine, "older", ["also stored before the index"])
    store = SqlStore(Settings(database_url=sql_database_url).resolved_database_url, migrations=_migrations())
    store.open()  # upgrades to documents_0002, which fills the index from the stored chunks
    store.close()
    assert [h.document_id for h in db.search(engine, TENANT, "written", limit=5)] == ["old"]
    assert [h.document_id for h in db.search(engine, TENANT, "before", limit=5)] in (["old", "older"], ["older", "old"])
    _document(engine, "new", ["written after"])
    with engine.begin() as conn:
        conn.execute(chunks_table.delete().where(chunks_table.c.document_id == "old"))
    assert [h.document_id for h in db.search(engine, TENANT, "written", limit=5)] == ["new"]


def _documents_alembic(engine: sa.Engine, action: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("path_separator", "os")
        cfg.set_main_option("version_locations", str(workload.migrations))
        cfg.attributes["connection"] = conn
        cfg.attributes["version_table"] = "conveyor_documents_alembic_version"
        getattr(command, action)(cfg, revision)
