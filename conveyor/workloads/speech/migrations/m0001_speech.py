"""Speech workload: resources, attempts, impressions, sessions (seed 002).

Revision ID: speech_0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "speech_0001"
down_revision = None
branch_labels = ("speech",)
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "conveyor_speech_resources",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("reference_text", sa.Text, nullable=False),
        sa.Column("audio_path", sa.Text),
        sa.Column("audio_task_id", sa.String(36)),
        sa.Column("voice", sa.String(40)),
        sa.Column("rating", sa.Float),
        sa.Column("average_score", sa.Float),
        sa.Column("attempts_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rating_impressions", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rating_updated_at", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_conveyor_speech_resources_tenant", "conveyor_speech_resources", ["tenant"])
    op.create_table(
        "conveyor_speech_attempts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("resource_id", sa.String(36), nullable=False),
        sa.Column("user_name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("transcript", sa.Text),
        sa.Column("words", JSONType),
        sa.Column("wer", sa.Float),
        sa.Column("score", sa.Float),
        sa.Column("audio_seconds", sa.Float),
        sa.Column("recognizer", sa.String(40)),
        sa.Column("error_message", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_conveyor_speech_attempts_resource_id", "conveyor_speech_attempts", ["resource_id"])
    op.create_table(
        "conveyor_speech_impressions",
        sa.Column("resource_id", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "conveyor_speech_impressions_pending",
        sa.Column("resource_id", sa.String(36), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "conveyor_speech_impression_batches",
        sa.Column("batch_id", sa.String(100), primary_key=True),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("applied_at", sa.Float, nullable=False),
    )
    op.create_table(
        "conveyor_speech_sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("resource_id", sa.String(36)),
        sa.Column("user_name", sa.String(200)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_seen_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_conveyor_speech_sessions_expires_at", "conveyor_speech_sessions", ["expires_at"])


def downgrade() -> None:
    for name in (
        "conveyor_speech_sessions",
        "conveyor_speech_impression_batches",
        "conveyor_speech_impressions_pending",
        "conveyor_speech_impressions",
        "conveyor_speech_attempts",
        "conveyor_speech_resources",
    ):
        op.drop_table(name)
