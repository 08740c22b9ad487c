"""The documents workload's tables (created by migration 0002)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

__all__ = ["chunks_table", "documents_table", "metadata"]

metadata = sa.MetaData()
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

documents_table = sa.Table(
    "conveyor_documents",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(200), nullable=False),
    #: the client's file name, cleaned; only ever shown, never used as a path
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("stored_path", sa.Text, nullable=False),
    sa.Column("kind", sa.String(16)),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    #: processing | ready | failed (seed 001's values)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("processing_progress", sa.Float, nullable=False),
    sa.Column("error_message", sa.Text),
    sa.Column("task_id", sa.String(36)),
    sa.Column("total_chunks", sa.Integer),
    sa.Column("total_tokens", sa.Integer),
    sa.Column("language", sa.String(8)),
    sa.Column("doc_metadata", JSONType),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("processing_started_at", sa.Float),
    sa.Column("processing_completed_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
)

chunks_table = sa.Table(
    "conveyor_document_chunks",
    metadata,
    sa.Column("document_id", sa.String(36), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("tokens", sa.Integer, nullable=False),
    sa.Column("char_start", sa.Integer, nullable=False),
    sa.Column("char_end", sa.Integer, nullable=False),
    sa.Column("pages", JSONType),
    sa.Column("language", sa.String(8)),
)
