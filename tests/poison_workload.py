"""Task types that take down the process running them (tests load it by name: ``tests.poison_workload``)."""

from __future__ import annotations

import os
import signal
import time

from conveyor import TaskContext, task


@task("tests.kills_itself", max_retries=1, retry_backoff=0.5, retry_jitter=False)
def kills_itself(ctx: TaskContext) -> str:
    """Kill the process it runs in (as a crash in C code or the OOM killer would)."""
    ctx.progress(10, "About to die")
    time.sleep(0.2)  # let the progress reach the store
    os.kill(os.getpid(), signal.SIGKILL)
    return "never"


@task("tests.overstays", time_limit=1)
def overstays(ctx: TaskContext, seconds: float = 30.0) -> str:
    """Run far past its hard time limit of one second."""
    time.sleep(seconds)
    return "never"
