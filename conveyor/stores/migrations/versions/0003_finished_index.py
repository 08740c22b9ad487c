"""An index for throughput: tasks finished since a time, per tenant.

Revision ID: 0003
Revises: 0001 (it followed a workload's tables, which moved to that workload's branch)
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The dashboard's charts count a tenant's tasks finished in the last hour;
    # without this the count reads every row the tenant ever had.
    op.create_index("ix_conveyor_tasks_tenant_finished", "conveyor_tasks", ["tenant", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_conveyor_tasks_tenant_finished", table_name="conveyor_tasks")
