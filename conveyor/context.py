"""TaskContext: what every task function receives as its first argument."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.errors import ConfigurationError, TaskCancelled

if TYPE_CHECKING:
    from conveyor.resources import Resources

__all__ = ["ProgressSink", "TaskContext"]


class ProgressSink(Protocol):
    """Where a context sends progress, and where it learns of a cancel request.

    Each executor hands its own: the local pool sends over a pipe to its parent,
    a Celery worker writes to the store through a buffered writer.
    """

    def report(self, task_id: str, progress: float, message: str, meta: dict[str, Any]) -> None: ...

    def is_cancelled(self, task_id: str) -> bool: ...


class TaskContext:
    """One run of one task: its identity, progress reporting and cancellation."""

    __slots__ = (
        "_resources",
        "_sink",
        "_workdir",
        "_workdir_root",
        "attempt",
        "logger",
        "queue",
        "task_id",
        "task_type",
        "tenant",
    )

    def __init__(
        self,
        *,
        task_id: str,
        task_type: str,
        tenant: str,
        attempt: int,
        queue: str,
        sink: ProgressSink,
        workdir_root: Path,
        resources: Resources | None = None,
    ) -> None:
        self.task_id = task_id
        self.task_type = task_type
        self.tenant = tenant
        #: 1 for the first run, 2 for the first retry, ...
        self.attempt = attempt
        self.queue = queue
        self._sink = sink
        self._workdir_root = workdir_root
        self._workdir: Path | None = None
        self._resources = resources
        self.logger = logging.LoggerAdapter(
            logging.getLogger(f"conveyor.task.{task_type}"), {"task_id": task_id, "tenant": tenant}
        )

    def progress(self, percent: float, message: str = "", **meta: Any) -> None:
        """Report progress (0–100, clamped) with a message; extra keywords are kept as meta."""
        value = float(percent)
        if math.isnan(value):
            raise ValueError("progress must be a number")
        self._sink.report(self.task_id, min(100.0, max(0.0, value)), str(message), meta)

    @property
    def cancelled(self) -> bool:
        """True once somebody asked to cancel this task; check it between steps."""
        return self._sink.is_cancelled(self.task_id)

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise TaskCancelled(f"task {self.task_id} was cancelled")

    @property
    def resources(self) -> Resources:
        """Settings, store, SQL engine and workload settings of the process running this task."""
        if self._resources is None:
            raise ConfigurationError("this task runs without resources (an executor built without a Conveyor)")
        return self._resources

    @property
    def workdir(self) -> Path:
        """A folder of this task's own, made on first use."""
        if self._workdir is None:
            path = self._workdir_root / "tasks" / self.task_id
            path.mkdir(parents=True, exist_ok=True)
            self._workdir = path
        return self._workdir

    def __repr__(self) -> str:
        return f"<TaskContext {self.task_type} {self.task_id} attempt={self.attempt}>"
