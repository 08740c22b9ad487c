"""What the pool and its worker processes say to each other over their pipes.

The pool sends ``Run`` and ``Stop`` on a worker's task pipe and ``Cancel`` on
its control pipe; the worker answers ``Progress`` and ``Done`` on the task
pipe. NamedTuples: they pickle as small as the bare tuples they replace, and
each kind is a type the receiver can match on.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["Cancel", "Done", "FromWorker", "Progress", "Run", "Stop", "ToWorker"]


class Run(NamedTuple):
    """Run one attempt of a task (pool → worker)."""

    task_id: str
    type_name: str
    params: dict[str, Any]
    tenant: str
    queue: str
    attempt: int
    max_retries: int
    cancel_requested: bool


class Stop(NamedTuple):
    """Finish the task at hand, then exit (pool → worker)."""


class Cancel(NamedTuple):
    """Raise the cancel flag of a task, running or queued (pool → worker, control pipe)."""

    task_id: str


class Progress(NamedTuple):
    """A progress report of the running task (worker → pool)."""

    task_id: str
    progress: float
    message: str
    meta: dict[str, Any]
    at: float


class Done(NamedTuple):
    """An attempt ended (worker → pool); ``state`` is a Status value."""

    task_id: str
    state: str
    result: Any
    error: dict[str, Any] | None
    retry_in: float | None
    at: float


#: what a worker sends the pool
FromWorker = Progress | Done
#: what the pool sends a worker on its task pipe
ToWorker = Run | Stop
