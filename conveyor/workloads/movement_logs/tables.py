"""The movement logs workload's tables (created by its migration ``movement_logs_0001``).

``movement_logs`` holds every stored event once: its ``(tenant, event_id)`` is the
primary key, so a batch written twice (a worker killed after its commit but
before it let go of the queue items) adds nothing the second time.
``movement_logs_queue`` is the durable queue of the embedded default, when no
Redis is configured. ``movement_logs_batches`` is the batch history the
queue status and the dashboard show.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

__all__ = ["batches_table", "logs_table", "metadata", "queue_table"]

metadata = sa.MetaData()
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
#: SQLite only auto-increments an INTEGER PRIMARY KEY
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

logs_table = sa.Table(
    "movement_logs",
    metadata,
    sa.Column("tenant", sa.String(200), primary_key=True),
    #: unique per tenant: a client bringing its own ids cannot collide with another tenant's
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(100), nullable=False),
    sa.Column("track_id", sa.BigInteger, nullable=False),
    #: [x1, y1, x2, y2] exactly as the client sent the numbers
    sa.Column("bbox", JSONType, nullable=False),
    sa.Column("state", sa.String(50), nullable=False),
    sa.Column("store", sa.String(200), nullable=False),
    #: when the movement happened (the client's timestamp, else when it was received), epoch seconds
    sa.Column("timestamp", sa.Float, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("stored_at", sa.Float, nullable=False),
    sa.Column("batch_id", sa.String(36)),
    sa.Index("ix_movement_logs_tenant_timestamp", "tenant", "timestamp"),
)

#: PostgreSQL checks every stored row itself: a fresh batch is COPYed in unchecked (db.copy_new_items_pg)
LOG_CHECK_PG = (
    "track_id >= 0 AND user_id <> '' AND state <> '' AND store <> '' AND jsonb_typeof(bbox) = 'array' "
    "AND jsonb_array_length(bbox) = 4 AND (bbox->>0)::float8 < (bbox->>2)::float8 "
    "AND (bbox->>1)::float8 < (bbox->>3)::float8"
)
sa.event.listen(
    logs_table,
    "after_create",
    sa.DDL(  # type: ignore[no-untyped-call]
        f"ALTER TABLE movement_logs ADD CONSTRAINT ck_movement_logs_valid CHECK ({LOG_CHECK_PG})"
    ).execute_if(dialect="postgresql"),
)

queue_table = sa.Table(
    "movement_logs_queue",
    metadata,
    sa.Column("seq", BigId, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False),
    #: the queued event as JSON, the same text a Redis list item holds
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("enqueued_at", sa.Float, nullable=False),
)

batches_table = sa.Table(
    "movement_logs_batches",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("task_id", sa.String(36)),
    sa.Column("backend", sa.String(16), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=False),
    #: items taken from the queue, rows written, rows already present, items that were not logs
    sa.Column("claimed", sa.Integer, nullable=False),
    sa.Column("moved", sa.Integer, nullable=False),
    sa.Column("duplicates", sa.Integer, nullable=False),
    sa.Column("invalid", sa.Integer, nullable=False),
    #: 1 when the batch took over the items of a worker that died
    sa.Column("recovered", sa.Integer, nullable=False),
    sa.Index("ix_movement_logs_batches_finished", "finished_at"),
)
