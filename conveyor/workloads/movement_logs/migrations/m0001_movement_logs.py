"""Movement logs workload: stored logs, the embedded queue, the batch history (seed 003).

Revision ID: movement_logs_0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "movement_logs_0001"
down_revision = None
branch_labels = ("movement_logs",)
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: the same text as tables.LOG_CHECK_PG (a migration does not import the code it was written beside)
LOG_CHECK_PG = (
    "track_id >= 0 AND user_id <> '' AND state <> '' AND store <> '' AND jsonb_typeof(bbox) = 'array' "
    "AND jsonb_array_length(bbox) = 4 AND (bbox->>0)::float8 < (bbox->>2)::float8 "
    "AND (bbox->>1)::float8 < (bbox->>3)::float8"
)


def upgrade() -> None:
    op.create_table(
        "movement_logs",
        sa.Column("tenant", sa.String(200), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(100), nullable=False),
        sa.Column("track_id", sa.BigInteger, nullable=False),
        sa.Column("bbox", JSONType, nullable=False),
        sa.Column("state", sa.String(50), nullable=False),
        sa.Column("store", sa.String(200), nullable=False),
        sa.Column("timestamp", sa.Float, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("stored_at", sa.Float, nullable=False),
        sa.Column("batch_id", sa.String(36)),
    )
    if op.get_bind().dialect.name == "postgresql":
        # The batch hands PostgreSQL the queue's JSON unparsed; the table checks each row itself.
        op.create_check_constraint("ck_movement_logs_valid", "movement_logs", sa.text(LOG_CHECK_PG))
    op.create_index("ix_movement_logs_tenant_timestamp", "movement_logs", ["tenant", "timestamp"])
    op.create_table(
        "movement_logs_queue",
        sa.Column("seq", BigId, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("enqueued_at", sa.Float, nullable=False),
    )
    op.create_table(
        "movement_logs_batches",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("task_id", sa.String(36)),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=False),
        sa.Column("claimed", sa.Integer, nullable=False),
        sa.Column("moved", sa.Integer, nullable=False),
        sa.Column("duplicates", sa.Integer, nullable=False),
        sa.Column("invalid", sa.Integer, nullable=False),
        sa.Column("recovered", sa.Integer, nullable=False),
    )
    op.create_index("ix_movement_logs_batches_finished", "movement_logs_batches", ["finished_at"])


def downgrade() -> None:
    op.drop_table("movement_logs_batches")
    op.drop_table("movement_logs_queue")
    op.drop_table("movement_logs")
