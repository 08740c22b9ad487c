"""Helpers for testing code that uses Conveyor (Conveyor's own tests use them too).

- ``MemoryStore``: the in-memory store, for an app with no database
  (``Conveyor(Settings(database_url="memory://"))``).
- ``RecordingSink`` and ``task_context``: run a task function directly, as a
  worker would, and see the progress it reported.
- ``wait_state``: poll a task until it reaches a state, with a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.context import TaskContext
from conveyor.records import Status, TaskRecord, new_task_id
from conveyor.stores.memory import MemoryStore

if TYPE_CHECKING:
    from conveyor.manager import TaskManager
    from conveyor.resources import Resources

__all__ = ["MemoryStore", "RecordingSink", "task_context", "wait_state"]


class RecordingSink:
    """A progress sink that keeps every step; cancelled once ``cancel_at`` (a message) was reported."""

    def __init__(self, *, cancel_at: str | None = None) -> None:
        self.steps: list[tuple[float, str]] = []
        self.cancel_at = cancel_at
        self.cancelled = False

    def report(self, task_id: str, progress: float, message: str, meta: dict[str, Any]) -> None:
        self.steps.append((progress, message))

    def is_cancelled(self, task_id: str) -> bool:
        return self.cancelled or (self.cancel_at is not None and any(m == self.cancel_at for _, m in self.steps))

    @property
    def messages(self) -> list[str]:
        return [m for _, m in self.steps]


def task_context(
    *,
    task_type: str = "test.task",
    tenant: str = "local",
    resources: Resources | None = None,
    workdir_root: Path | None = None,
    sink: RecordingSink | None = None,
    attempt: int = 1,
    queue: str = "default",
) -> TaskContext:
    """A TaskContext for calling a task function directly (``fn(task_context(...), **params)``)."""
    if workdir_root is None:
        if resources is None:
            raise ValueError("give resources or a workdir_root")
        workdir_root = resources.data_dir
    return TaskContext(
        task_id=new_task_id(),
        task_type=task_type,
        tenant=tenant,
        attempt=attempt,
        queue=queue,
        sink=sink or RecordingSink(),
        workdir_root=workdir_root,
        resources=resources,
    )


def wait_state(
    manager: TaskManager,
    task_id: str,
    states: Status | Iterable[Status],
    *,
    timeout: float = 10.0,
    tenant: str | None = None,
    interval: float = 0.01,
) -> TaskRecord:
    """Poll until the task is in one of ``states``; AssertionError with its last record after ``timeout``."""
    wanted = {states} if isinstance(states, Status) else set(states)
    deadline = time.monotonic() + timeout
    while True:
        record = manager.get(task_id, tenant=tenant)
        if record.state in wanted:
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} is {record.state.value}, not {sorted(s.value for s in wanted)}")
        time.sleep(interval)
