"""A task type that never looks at ``ctx.cancelled``: only ``terminate`` stops it (tests load it by name)."""

from __future__ import annotations

import time

from conveyor import TaskContext, task


@task("tests.stubborn")
def stubborn(ctx: TaskContext, seconds: float = 30.0) -> str:
    """Busy for ``seconds``, reporting progress but ignoring cancel requests."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
        ctx.progress(50, "Not listening")
    return "finished anyway"
