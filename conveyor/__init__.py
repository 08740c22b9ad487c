"""Conveyor: asynchronous tasks for Python back ends, with progress you can watch.

Define a task type, submit it over HTTP or from Python, follow its progress::

    from conveyor import TaskContext, task

    @task("reports.build", queue="cpu", max_retries=3, time_limit=600)
    def build_report(ctx: TaskContext, month: str) -> dict:
        ctx.progress(50, "Crunching numbers")
        return {"month": month}

Importing this package imports no broker, database driver or image library.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from conveyor import errors
from conveyor.app import Conveyor, get_conveyor, get_task_manager
from conveyor.context import TaskContext
from conveyor.errors import ConveyorError, Retry, TaskCancelled, TaskFailed
from conveyor.handle import TaskHandle
from conveyor.manager import AsyncTaskManager, TaskManager
from conveyor.records import Status, TaskRecord
from conveyor.registry import Registry, TaskType, task
from conveyor.scheduler import PeriodicJob
from conveyor.settings import Settings
from conveyor.stores.base import TaskQuery
from conveyor.submission import SubmitRequest
from conveyor.workload import Workload

try:
    __version__ = _version("conveyor")
except PackageNotFoundError:  # pragma: no cover - run from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "AsyncTaskManager",
    "Conveyor",
    "ConveyorError",
    "PeriodicJob",
    "Registry",
    "Retry",
    "Settings",
    "Status",
    "SubmitRequest",
    "TaskCancelled",
    "TaskContext",
    "TaskFailed",
    "TaskHandle",
    "TaskManager",
    "TaskQuery",
    "TaskRecord",
    "TaskType",
    "Workload",
    "__version__",
    "errors",
    "get_conveyor",
    "get_task_manager",
    "task",
]
