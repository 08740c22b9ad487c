"""A deadline on waiting Celery tasks: ``expected_by``, and an index to find the overdue ones.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: the deadline given to Celery tasks already waiting at the upgrade (the default grace)
UPGRADE_GRACE = 300.0


def upgrade() -> None:
    op.add_column("conveyor_tasks", sa.Column("expected_by", sa.Float))
    # The Celery reaper asks every few seconds for PENDING tasks past their deadline.
    op.create_index("ix_conveyor_tasks_state_expected", "conveyor_tasks", ["state", "expected_by"])
    # Tasks queued before the upgrade get a deadline too: a message they lost is sent again.
    tasks = sa.table(
        "conveyor_tasks",
        sa.column("state", sa.String),
        sa.column("executor", sa.String),
        sa.column("eta", sa.Float),
        sa.column("created_at", sa.Float),
        sa.column("expected_by", sa.Float),
    )
    op.execute(
        tasks.update()
        .where(tasks.c.state == "PENDING", tasks.c.executor == "celery")
        .values(expected_by=sa.func.coalesce(tasks.c.eta, tasks.c.created_at) + UPGRADE_GRACE)
    )


def downgrade() -> None:
    op.drop_index("ix_conveyor_tasks_state_expected", table_name="conveyor_tasks")
    with op.batch_alter_table("conveyor_tasks") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("expected_by")
