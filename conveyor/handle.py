"""TaskHandle: a submitted task as Celery's ``AsyncResult`` shows it, read from the store.

Returned by ``fn.delay()`` and ``fn.apply_async()``. Every property reads the
store afresh, so a handle is cheap to keep and always current. States are
Conveyor's (``PENDING PROCESSING RETRY SUCCESS FAILURE CANCELLED``), the
strings the API answers with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.errors import TaskFailed
from conveyor.records import Status, TaskRecord

if TYPE_CHECKING:
    from conveyor.manager import TaskManager

__all__ = ["TaskHandle"]


class TaskHandle:
    """``.id .state .status .info .result``, ``ready() successful() failed() get() revoke()``."""

    def __init__(self, task_id: str, manager: TaskManager, *, tenant: str | None = None) -> None:
        self.id = task_id
        self._manager = manager
        self._tenant = tenant

    @property
    def task_id(self) -> str:
        return self.id

    def record(self) -> TaskRecord:
        return self._manager.get(self.id, tenant=self._tenant)

    @property
    def state(self) -> str:
        return self.record().state.value

    status = state

    @property
    def info(self) -> Any:
        """Progress while it runs (``{"progress", "message"}``), the result once done, the error if it failed."""
        r = self.record()
        if r.state is Status.SUCCESS:
            return r.result
        if r.state in (Status.FAILURE, Status.CANCELLED):
            return r.error or {"message": r.message}
        return {"progress": r.progress, "message": r.message, **r.meta}

    @property
    def result(self) -> Any:
        return self.info

    def ready(self) -> bool:
        return self.record().finished

    def successful(self) -> bool:
        return self.record().state is Status.SUCCESS

    def failed(self) -> bool:
        return self.record().state is Status.FAILURE

    def get(self, timeout: float | None = None, *, propagate: bool = True) -> Any:
        """Wait for the outcome and return the result; a failure or cancel raises TaskFailed.

        Raises TimeoutError when ``timeout`` seconds pass first. With
        ``propagate=False`` a failed task's error dict is returned instead.
        """
        r = self._manager.wait(self.id, tenant=self._tenant, timeout=timeout)
        if r.state is Status.SUCCESS:
            return r.result
        if not propagate:
            return r.error or {"message": r.message}
        raise TaskFailed.of(r)

    def revoke(self, *, terminate: bool = False) -> None:
        """Cancel the task (Celery's ``revoke``); nothing happens if it has already finished."""
        if not self.ready():
            self._manager.cancel(self.id, tenant=self._tenant, terminate=terminate)

    def forget(self) -> None:
        """Celery's ``forget``: records expire by their result TTL here, so there is nothing to do."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id}>"
