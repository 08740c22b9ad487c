"""The no-op task type the benchmarks submit: ``CONVEYOR_WORKLOADS=system,bench.noop_workload``."""

from __future__ import annotations

from conveyor import TaskContext, task


@task("bench.noop")
def noop(ctx: TaskContext) -> None:
    """Nothing at all: what is left to measure is Conveyor itself."""
    return None
