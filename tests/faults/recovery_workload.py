"""A task that leaves one line per execution in a file, to count how often each task ran (tests load it by name)."""

from __future__ import annotations

import os
import time

from conveyor import TaskContext, task


@task("tests.mark")
def mark(ctx: TaskContext, path: str, seconds: float = 0.0) -> None:
    """Append this task's id to ``path`` (one short O_APPEND write: whole lines even from several processes)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{ctx.task_id}\n".encode())
    finally:
        os.close(fd)
    if seconds:
        time.sleep(seconds)
