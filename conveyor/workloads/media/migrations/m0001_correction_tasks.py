"""Media workload: the correction_tasks table (seed 000).

Revision ID: correction_tasks_0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "correction_tasks_0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "correction_tasks",
        sa.Column("task_id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("job_id", sa.String(36)),
        sa.Column("media_type", sa.String(8), nullable=False),
        sa.Column("input", sa.Text, nullable=False),
        sa.Column("output_folder", sa.Text, nullable=False),
        sa.Column("options", JSONType, nullable=False),
        sa.Column("filename", sa.String(255)),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("result", JSONType),
        sa.Column("error_message", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("completed_at", sa.Float),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_correction_tasks_tenant_created", "correction_tasks", ["tenant", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_correction_tasks_tenant_created", table_name="correction_tasks")
    op.drop_table("correction_tasks")
