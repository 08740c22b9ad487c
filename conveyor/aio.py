"""The async face seed 002's application code awaits: ``submit``, ``get_result``, ``cancel``.

Seed 002 wrote its endpoints and WebSocket handlers against a TaskManager
whose verbs are coroutines::

    from conveyor.aio import get_task_manager

    task_manager = get_task_manager()
    task_id = await task_manager.submit("process_speak_audio", resource_id, chunks, user_name,
                                        background_tasks=background_tasks)
    result = await task_manager.get_result(task_id)   # .status .result .error, or None
    cancelled = await task_manager.cancel(task_id)    # bool

Each verb runs the sync ``conveyor.manager.TaskManager`` in a worker thread,
so the event loop never waits on the store. ``from conveyor import
get_task_manager`` stays the sync manager.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from conveyor.errors import InvalidTransition, TaskNotFound
from conveyor.records import TaskRecord

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.manager import TaskManager as SyncTaskManager

__all__ = ["TaskManager", "TaskResult", "get_task_manager"]


@dataclasses.dataclass(frozen=True, slots=True)
class TaskResult:
    """What seed 002's ``get_result`` returns: status, result and error of one task."""

    task_id: str
    #: ``PENDING``, ``PROCESSING``, ``RETRY``, ``SUCCESS``, ``FAILURE`` or ``CANCELLED``
    status: str
    #: the value the task returned, once it is SUCCESS
    result: Any
    #: the failure's message, once it is FAILURE (None otherwise)
    error: str | None
    progress: float
    message: str
    #: which executor ran (or runs) it: ``local`` (in-process) or ``celery``
    executor: str
    #: the full record, for anything the seed's three fields do not say
    record: TaskRecord

    @property
    def ready(self) -> bool:
        return self.record.finished

    @classmethod
    def of(cls, record: TaskRecord) -> TaskResult:
        error = None
        if record.error is not None:
            error = str(record.error.get("message") or record.error.get("type") or "failed")
        return cls(
            task_id=record.id,
            status=record.state.value,
            result=record.result,
            error=error,
            progress=record.progress,
            message=record.message,
            executor=record.executor,
            record=record,
        )


class TaskManager:
    """Seed 002's TaskManager: the sync manager's verbs as coroutines, with its return shapes."""

    def __init__(self, manager: SyncTaskManager) -> None:
        self.sync = manager

    async def submit(self, name: str, *args: Any, background_tasks: Any = None, **kwargs: Any) -> str:
        """Submit ``name`` with positional args bound to its params in order; returns the task id.

        With a FastAPI ``BackgroundTasks`` a task that runs in-process starts
        once the response has been sent (the seed's BackgroundTasksExecutor).
        """
        return await anyio.to_thread.run_sync(
            lambda: self.sync.submit(name, *args, background_tasks=background_tasks, **kwargs)
        )

    async def get_result(self, task_id: str, *, tenant: str | None = None) -> TaskResult | None:
        """The task's status, result and error; None for an id nobody submitted (never "pending")."""
        return await anyio.to_thread.run_sync(lambda: self.sync.get_result(task_id, tenant=tenant))

    async def cancel(self, task_id: str, *, tenant: str | None = None, terminate: bool = False) -> bool:
        """True if the task is cancelled or asked to stop; False if it is unknown or already finished."""

        def run() -> bool:
            try:
                record = self.sync.cancel(task_id, tenant=tenant, terminate=terminate)
            except (TaskNotFound, InvalidTransition):
                return False
            return record.state.value == "CANCELLED" or record.cancel_requested

        return await anyio.to_thread.run_sync(run)

    async def wait(self, task_id: str, *, tenant: str | None = None, timeout: float | None = None) -> TaskResult:
        """Until the task has finished; TimeoutError after ``timeout`` seconds."""
        record = await self.sync.aio.wait(task_id, tenant=tenant, timeout=timeout)
        return TaskResult.of(record)


def get_task_manager(conveyor: Conveyor | None = None) -> TaskManager:
    """The async TaskManager of ``conveyor``, or of the process's default app (built on first use)."""
    if conveyor is None:
        from conveyor.app import get_conveyor

        conveyor = get_conveyor()
    return TaskManager(conveyor.manager)
