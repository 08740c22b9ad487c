"""``logs.process_batch`` (seed 003's ``process_movement_logs_batch``): the queue into ``movement_logs``.

The scheduler submits it every ``CONVEYOR_MOVEMENT_LOGS_INTERVAL`` seconds
and ``POST /api/logs/process/`` on demand. It is internal: the batch moves
every tenant's logs, so tenants trigger it through that route, not through
``/api/v1/tasks``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.context import TaskContext
from conveyor.registry import task
from conveyor.workloads.movement_logs.batch import BatchResult, run_batches
from conveyor.workloads.movement_logs.service import open_queue, workload_settings

__all__ = ["ProcessBatch", "process_batch", "process_movement_logs_batch"]


class ProcessBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch_size: int | None = Field(
        default=None, ge=1, le=100_000, description="logs per batch (default: CONVEYOR_MOVEMENT_LOGS_BATCH_SIZE)"
    )
    max_batches: int = Field(
        default=1, ge=1, le=10_000, description="batches in this run; it stops when the queue is empty"
    )


@task(
    "logs.process_batch",
    aliases=("process_movement_logs_batch",),
    queue="logs",
    params=ProcessBatch,
    visibility="internal",
    time_limit=3600,
    soft_time_limit=3500,
    result_ttl=86_400,
)
def process_batch(ctx: TaskContext, batch_size: int | None = None, max_batches: int = 1) -> dict[str, Any]:
    """Move up to M queued movement logs into the movement_logs table, exactly once."""
    resources = ctx.resources
    wl = workload_settings(resources)
    engine = resources.engine
    queue = open_queue(resources.settings, wl, engine)
    size = batch_size or wl.batch_size
    ctx.progress(0, f"Taking up to {size} logs from the {queue.kind} queue {queue.name!r}")

    def report(total: BatchResult, done: int, of: int) -> None:
        batch_no = total.batches + 1
        # Each batch is its own share of the run; within it, each written chunk moves the bar.
        pct = 100.0 * (total.batches + done / max(of, 1)) / max_batches
        ctx.progress(min(pct, 99.0), f"Batch {batch_no}: wrote {done} of {of} logs")

    result = run_batches(
        engine,
        queue,
        max_items=size,
        max_batches=max_batches,
        chunk_size=wl.chunk_size,
        task_id=ctx.task_id,
        progress=report,
        should_stop=lambda: ctx.cancelled,
    )
    out = result.to_dict()
    out["queue"] = queue.name
    out["backend"] = queue.kind
    out["queue_length"] = queue.length()
    ctx.progress(100, f"Moved {result.moved} logs ({result.duplicates} already stored) in {result.batches} batches")
    return out


#: seed 003's name: ``from ...tasks import process_movement_logs_batch; process_movement_logs_batch.delay().get()``
process_movement_logs_batch = process_batch
