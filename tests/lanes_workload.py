"""Task types for the local pool's lane, fairness, cancel and crash tests (loaded by name)."""

from __future__ import annotations

import os
import time

from conveyor import TaskContext, task


@task("lanes.touch")
def touch(ctx: TaskContext, path: str, seconds: float = 0.0) -> float:
    """Leave a line in ``path`` as the body starts (one per execution), then work ignoring cancel requests."""
    started = time.time()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{ctx.task_id} {ctx.attempt}\n".encode())
    finally:
        os.close(fd)
    if seconds:
        time.sleep(seconds)
    return started


@task("lanes.elsewhere", queue="other")
def elsewhere(ctx: TaskContext) -> str:
    """A quick task on a queue of its own."""
    return "served"


def executions(path: str) -> dict[str, int]:
    """How many times each task's body started, from the lines ``touch`` left."""
    counts: dict[str, int] = {}
    if not os.path.exists(path):
        return counts
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            task_id = line.split()[0]
            counts[task_id] = counts.get(task_id, 0) + 1
    return counts
