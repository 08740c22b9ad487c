"""The executor contract, and the run logic every executor shares.

An executor takes a task record that is already in the store and gets it run
somewhere. ``run_task`` calls the task function and turns whatever happened
into an ``Outcome``; the ``*_change`` builders turn a start or an outcome into
the store ``Change`` that records it. Both are the same whether the function
ran in a local worker process or a Celery worker.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from conveyor.context import TaskContext
from conveyor.errors import ExecutorError, Retry, SoftTimeLimitExceeded, TaskCancelled
from conveyor.records import Status, TaskRecord, now
from conveyor.registry import TaskType
from conveyor.transitions import (
    Outcome,
    failure_outcome,
    outcome_change,
    progress_change,
    started_change,
)

__all__ = [
    "Executor",
    "Outcome",
    "failure_outcome",
    "outcome_change",
    "progress_change",
    "result_ttl_for",
    "run_task",
    "started_change",
]

#: how many tracebacks lines a failed task keeps
TRACEBACK_LINES = 30
#: a task whose worker died this many times more than its retries allow is failed
MAX_REDELIVERIES = 5


class Executor(Protocol):
    """Runs task records that the manager has written to the store."""

    #: "local", "celery" or "hybrid"
    name: str

    def start(self) -> None: ...

    def stop(self, *, graceful: bool = True) -> None: ...

    def route(self, task_type: TaskType) -> str:
        """Which engine will run this type: "local" or "celery"."""

    def claim_fields(self, engine: str, *, due: float | None = None) -> dict[str, Any]:
        """Fields to set on a new record that ``engine`` will run (its holder and lease, or its deadline).

        ``due``: when the task may start (its eta; unset: now).
        """

    def dispatch(self, record: TaskRecord) -> None:
        """Hand a stored record to a worker. Raises ExecutorError when it cannot."""

    def dispatch_many(self, records: Sequence[TaskRecord]) -> list[ExecutorError | None]:
        """``dispatch`` each record, in one go where the engine can; the error of each that could not go."""

    def cancel(self, record: TaskRecord) -> None:
        """Best effort: drop the task if it waits here, signal it if it runs."""

    def terminate(self, record: TaskRecord) -> None:
        """Kill the process running this task (its record already says CANCELLED)."""

    def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "degraded" | "down", ...}`` for /health."""

    def stats(self) -> dict[str, Any]: ...

    def workers(self) -> list[dict[str, Any]]:
        """The workers serving this executor: name, alive, active and reserved tasks."""

    def broker_depths(self) -> dict[str, int] | None:
        """Messages waiting in the broker per queue; None with no broker. ExecutorError while it is down."""


def error_info(exc: BaseException, message: str | None = None) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    lines = tb.rstrip().splitlines()
    return {
        "type": type(exc).__name__,
        "message": message or str(exc) or type(exc).__name__,
        "traceback": "\n".join(lines[-TRACEBACK_LINES:]),
    }


class _SoftLimit:
    """Raise SoftTimeLimitExceeded in the running thread after ``seconds`` (main thread only)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.armed = False

    def __enter__(self) -> None:
        if not self.seconds or threading.current_thread() is not threading.main_thread():
            return

        def fire(_signum: int, _frame: Any) -> None:
            raise SoftTimeLimitExceeded(f"soft time limit of {self.seconds:g}s exceeded")

        self._previous = signal.signal(signal.SIGALRM, fire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        self.armed = True

    def __exit__(self, *exc: object) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)


def _call(task_type: TaskType, ctx: TaskContext, params: dict[str, Any], loop: asyncio.AbstractEventLoop | None) -> Any:
    if task_type.is_async:
        coro = task_type.fn(ctx, **params)
        if loop is None:
            return asyncio.run(coro)
        return loop.run_until_complete(coro)
    return task_type.fn(ctx, **params)


def run_task(
    task_type: TaskType,
    ctx: TaskContext,
    params: dict[str, Any],
    *,
    max_retries: int,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Outcome:
    """Run one attempt and say how it ended; never raises for the task's own errors."""
    try:
        if ctx.cancelled:
            raise TaskCancelled("cancelled before it started")
        with _SoftLimit(task_type.soft_time_limit):
            value = _call(task_type, ctx, params, loop)
        try:
            json.dumps(value)
        except (TypeError, ValueError) as e:
            return Outcome(Status.FAILURE, error=error_info(e, f"result is not JSON serializable: {e}"))
        return Outcome(Status.SUCCESS, result=value)
    except TaskCancelled:
        return Outcome(Status.CANCELLED)
    except SoftTimeLimitExceeded as e:
        return Outcome(Status.FAILURE, error=error_info(e))
    except Retry as e:
        if ctx.attempt <= max_retries:
            delay = e.countdown if e.countdown is not None else task_type.retry_delay(ctx.attempt)
            return Outcome(Status.RETRY, error=error_info(e), retry_in=delay)
        return Outcome(Status.FAILURE, error=error_info(e, f"gave up after {ctx.attempt} attempts: {e}"))
    except Exception as e:
        if ctx.cancelled:
            # Many tasks stop by letting an error escape once cancelled.
            return Outcome(Status.CANCELLED)
        if ctx.attempt <= max_retries and isinstance(e, task_type.retry_on):
            return Outcome(Status.RETRY, error=error_info(e), retry_in=task_type.retry_delay(ctx.attempt))
        return Outcome(Status.FAILURE, error=error_info(e))


def result_ttl_for(task_type: TaskType | None, default: float) -> float:
    if task_type is not None and task_type.result_ttl is not None:
        return task_type.result_ttl
    return default


Clock = Callable[[], float]
_ = now  # re-exported for executors that take a clock
