"""Built-in task types: a round trip, a sleeper to try everything with, and upkeep.

A plain module workload (no ``Workload`` declaration): importing it registers
its types, and ``periodic_jobs`` is read from it.
"""

from __future__ import annotations

import os
import socket
import time

from pydantic import BaseModel, ConfigDict, Field

from conveyor.context import TaskContext
from conveyor.registry import task
from conveyor.scheduler import PeriodicJob

__all__ = ["PingParams", "SleepParams", "periodic_jobs"]


class PingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: echoed back, to tell round trips apart
    payload: str | None = Field(default=None, max_length=10_000)


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(default=5.0, ge=0, le=86_400, description="total time to sleep")
    steps: int = Field(default=10, ge=1, le=10_000, description="progress reports along the way")
    fail: bool = Field(default=False, description="raise an error at the end (to try failures and retries)")


@task("system.ping", queue="default", params=PingParams)
def ping(ctx: TaskContext, payload: str | None = None) -> dict[str, object]:
    """Answer at once with who ran the task: a round trip through the whole system."""
    return {
        "pong": True,
        "payload": payload,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "task_id": ctx.task_id,
        "attempt": ctx.attempt,
    }


@task("system.sleep", queue="default", params=SleepParams)
def sleep(ctx: TaskContext, seconds: float = 5.0, steps: int = 10, fail: bool = False) -> dict[str, object]:
    """Sleep in steps, reporting progress at each and stopping when cancelled."""
    started = time.monotonic()
    for step in range(1, steps + 1):
        ctx.raise_if_cancelled()
        time.sleep(seconds / steps)
        ctx.progress(100 * step / steps, f"Step {step} of {steps}")
    if fail:
        raise RuntimeError("failed on purpose (fail=true)")
    return {"slept": round(time.monotonic() - started, 3), "steps": steps}


@task("maintenance.purge_expired", queue="maintenance", visibility="internal")
def purge_expired(ctx: TaskContext) -> dict[str, int]:
    """Delete finished task records whose result TTL has passed."""
    ctx.progress(10, "Purging expired task records")
    deleted = ctx.resources.store.purge_expired(time.time())
    return {"deleted": deleted}


periodic_jobs = [PeriodicJob("purge-expired", "maintenance.purge_expired", every=3600)]
