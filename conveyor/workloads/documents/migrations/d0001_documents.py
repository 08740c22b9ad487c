"""Documents workload: documents and their chunks.

The documents workload's own Alembic branch. Before workloads had branches
these tables were core revision 0002; a database made then has them
already (its version row is restamped to the core's 0001 by the store), so
this revision creates them only where they are missing.

Revision ID: documents_0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "documents_0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("conveyor_documents"):
        return
    op.create_table(
        "conveyor_documents",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("stored_path", sa.Text, nullable=False),
        sa.Column("kind", sa.String(16)),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
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
    op.create_index("ix_conveyor_documents_tenant_created", "conveyor_documents", ["tenant", "created_at"])
    op.create_index("ix_conveyor_documents_created", "conveyor_documents", ["created_at"])
    op.create_table(
        "conveyor_document_chunks",
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
    op.create_index("ix_conveyor_document_chunks_tenant", "conveyor_document_chunks", ["tenant"])


def downgrade() -> None:
    op.drop_table("conveyor_document_chunks")
    op.drop_table("conveyor_documents")
