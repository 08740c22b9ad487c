"""A task type that counts its own executions: each run appends its id to a file (tests load it by import)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from conveyor import TaskContext, task


@task("tests.counted")
def counted(ctx: TaskContext, log: str) -> str:
    """Appends its id to ``log`` each time its body runs (one short write: atomic with O_APPEND)."""
    with open(log, "a", encoding="utf-8") as out:
        out.write(ctx.task_id + "\n")
    time.sleep(0.05)
    return "counted"


def executions(log: Path) -> Counter[str]:
    """How many times each task's body ran."""
    return Counter(log.read_text().split()) if log.exists() else Counter()
