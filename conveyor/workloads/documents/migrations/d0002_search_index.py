"""Documents workload: a full-text index of the chunks, so a search never reads the whole corpus.

SQLite: an FTS5 table (accents folded, as the old in-Python BM25 did), kept
by triggers on the chunks table; each chunk remembers its FTS row in
``search_rowid`` (a chunk's own rowid may change on VACUUM, the FTS table's
does not). PostgreSQL: a generated ``tsvector`` column with a GIN index.
Both are filled from the chunks already stored.

Revision ID: documents_0002
Revises: documents_0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "documents_0002"
down_revision = "documents_0001"
branch_labels = None
depends_on = None

_SQLITE_UP = [
    "ALTER TABLE conveyor_document_chunks ADD COLUMN search_rowid INTEGER",
    "CREATE VIRTUAL TABLE conveyor_document_chunks_fts USING fts5(text, tokenize='unicode61 remove_diacritics 2')",
    # Backfill: one FTS row per stored chunk, numbered by the chunk's rowid today.
    "INSERT INTO conveyor_document_chunks_fts (rowid, text) SELECT rowid, text FROM conveyor_document_chunks",
    "UPDATE conveyor_document_chunks SET search_rowid = rowid",
    "CREATE UNIQUE INDEX ix_conveyor_document_chunks_search_rowid ON conveyor_document_chunks (search_rowid)",
    """CREATE TRIGGER conveyor_document_chunks_fts_insert AFTER INSERT ON conveyor_document_chunks
    BEGIN
      INSERT INTO conveyor_document_chunks_fts (text) VALUES (new.text);
      UPDATE conveyor_document_chunks SET search_rowid = last_insert_rowid()
        WHERE document_id = new.document_id AND idx = new.idx;
    END""",
    """CREATE TRIGGER conveyor_document_chunks_fts_delete AFTER DELETE ON conveyor_document_chunks
    BEGIN
      DELETE FROM conveyor_document_chunks_fts WHERE rowid = old.search_rowid;
    END""",
    """CREATE TRIGGER conveyor_document_chunks_fts_update AFTER UPDATE OF text ON conveyor_document_chunks
    BEGIN
      UPDATE conveyor_document_chunks_fts SET text = new.text WHERE rowid = new.search_rowid;
    END""",
]

_SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS conveyor_document_chunks_fts_insert",
    "DROP TRIGGER IF EXISTS conveyor_document_chunks_fts_delete",
    "DROP TRIGGER IF EXISTS conveyor_document_chunks_fts_update",
    "DROP TABLE IF EXISTS conveyor_document_chunks_fts",
    "DROP INDEX IF EXISTS ix_conveyor_document_chunks_search_rowid",
    "ALTER TABLE conveyor_document_chunks DROP COLUMN search_rowid",
]

_POSTGRES_UP = [
    # Generated: PostgreSQL fills it for the rows already there, and for every new one.
    "ALTER TABLE conveyor_document_chunks ADD COLUMN search_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED",
    "CREATE INDEX ix_conveyor_document_chunks_search ON conveyor_document_chunks USING gin (search_vector)",
]

_POSTGRES_DOWN = [
    "DROP INDEX IF EXISTS ix_conveyor_document_chunks_search",
    "ALTER TABLE conveyor_document_chunks DROP COLUMN IF EXISTS search_vector",
]


def _run(statements: list[str]) -> None:
    for statement in statements:
        op.execute(sa.text(statement))


def upgrade() -> None:
    _run(_POSTGRES_UP if op.get_bind().dialect.name == "postgresql" else _SQLITE_UP)


def downgrade() -> None:
    _run(_POSTGRES_DOWN if op.get_bind().dialect.name == "postgresql" else _SQLITE_DOWN)
