"""Task records and their timeline events.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "conveyor_tasks",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("meta", JSONType),
        sa.Column("params", JSONType),
        sa.Column("result", JSONType),
        sa.Column("error", JSONType),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_retries", sa.Integer, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("idempotency_key", sa.String(200)),
        sa.Column("executor", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(200)),
        sa.Column("lease_expires_at", sa.Float),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("eta", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("expires_at", sa.Float),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_conveyor_tasks_tenant_created", "conveyor_tasks", ["tenant", "created_at"])
    op.create_index("ix_conveyor_tasks_state_queue", "conveyor_tasks", ["state", "queue"])
    op.create_index("ix_conveyor_tasks_worker", "conveyor_tasks", ["worker"])
    op.create_index("ix_conveyor_tasks_expires", "conveyor_tasks", ["expires_at"])
    op.create_index(
        "uq_conveyor_tasks_tenant_idempotency", "conveyor_tasks", ["tenant", "idempotency_key"], unique=True
    )
    op.create_table(
        "conveyor_task_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_conveyor_task_events_task", "conveyor_task_events", ["task_id", "seq"])


def downgrade() -> None:
    op.drop_table("conveyor_task_events")
    op.drop_table("conveyor_tasks")
