"""The media workload's table: one row per correction task (seed 000's ``CorrectionTask``)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

__all__ = ["correction_tasks", "metadata"]

metadata = sa.MetaData()
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

correction_tasks = sa.Table(
    "correction_tasks",
    metadata,
    #: the correction's id: the one the client polls (``GET /corr/tasks/<task_id>/``)
    sa.Column("task_id", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(200), nullable=False),
    #: the Conveyor task record that runs it (``/api/v1/tasks/<job_id>``)
    sa.Column("job_id", sa.String(36)),
    #: audio | image | video
    sa.Column("media_type", sa.String(8), nullable=False),
    #: paths relative to the tenant's storage, as the task was given them
    sa.Column("input", sa.Text, nullable=False),
    sa.Column("output_folder", sa.Text, nullable=False),
    sa.Column("options", JSONType, nullable=False),
    #: the client's file name of an upload, cleaned; only ever shown
    sa.Column("filename", sa.String(255)),
    sa.Column("size_bytes", sa.BigInteger),
    #: PENDING | PROCESSING | SUCCESS | FAILURE | CANCELLED (Conveyor's and Celery's names)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("progress", sa.Float, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("result", JSONType),
    sa.Column("error_message", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("completed_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_correction_tasks_tenant_created", "tenant", "created_at"),
)
