"""Movement logs workload (seed 003's Wise Backend): logs queued in Redis, batched into SQL exactly once.

Loaded by default wherever the store is SQL: the embedded default keeps the
queue in a table of its own, a deployment with Redis keeps it in the Redis
list ``movement_logs``. This module imports nothing heavy (no Redis client).
"""

from __future__ import annotations

from pathlib import Path

from conveyor.scheduler import PeriodicJob
from conveyor.workload import Workload
from conveyor.workloads.movement_logs.config import MovementLogsSettings

__all__ = ["workload"]

# Read once, when the workload is declared: a schedule is fixed for a process's life.
_defaults = MovementLogsSettings()
_schedule = PeriodicJob(
    "movement-logs-batch",
    "logs.process_batch",
    every=_defaults.interval,
    params={"max_batches": _defaults.batches_per_run},
)

workload = Workload(
    name="movement_logs",
    description="Movement logs: a high-rate queue (Redis list or SQL table) moved in batches into SQL exactly once",
    extra="movement_logs",
    requires=(),
    needs_sql=True,
    modules=("conveyor.workloads.movement_logs.tasks",),
    router="conveyor.workloads.movement_logs.routes:router",
    periodic_jobs=(_schedule,),
    settings=MovementLogsSettings,
    migrations=Path(__file__).with_name("migrations"),
    dashboard=Path(__file__).with_name("dashboard"),
    # seed 003's management command as `conveyor logs check|sample|process`
    cli="conveyor.workloads.movement_logs.cli:app",
    cli_name="logs",
)
