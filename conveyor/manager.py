"""TaskManager: submit, look up, wait for, cancel, retry and list tasks.

The sync ``TaskManager`` is the one implementation; ``AsyncTaskManager``
(``manager.aio``) gives the same verbs to ``async`` code by running the
store calls in a worker thread, as seed 002's ``await task_manager.submit``
expects.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from conveyor.errors import (
    ConveyorError,
    ExecutorError,
    InvalidTransition,
    QuotaExceeded,
    TaskNotFinished,
    TaskNotFound,
)
from conveyor.records import FINAL_STATES, Status, TaskEvent, TaskRecord, now
from conveyor.stores.base import Page, QueueStats, TaskQuery
from conveyor.submission import SubmitRequest, SubmitResult, submit_many
from conveyor.transitions import Outcome, not_dispatched, outcome_change, requeue
from conveyor.workload import declared_queues

if TYPE_CHECKING:
    from conveyor.aio import TaskResult
    from conveyor.executors.base import Executor
    from conveyor.hub import EventHub
    from conveyor.metrics import Metrics
    from conveyor.registry import Registry
    from conveyor.settings import Settings
    from conveyor.stores.base import Store
    from conveyor.workload import LoadedWorkload

__all__ = ["AsyncTaskManager", "TaskManager"]


#: how often a waiter re-reads the store when no in-process event woke it
POLL_INTERVAL = 0.5
#: a task handed to a FastAPI BackgroundTasks that nobody runs starts after this many seconds anyway
BACKGROUND_GRACE = 2.0
MAX_PAGE = 500


class _QuotaGuard:
    """Per-tenant unfinished-task cap without a COUNT query on every submit.

    The count is read from the store at most every ``refresh`` seconds and
    the submits made here since are added on top; across several API
    processes the cap is approximate by that window, which is the price of
    not counting on every request.
    """

    def __init__(self, limit: int, refresh: float = 0.5) -> None:
        self.limit = limit
        self.refresh = refresh
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[float, int]] = {}
        self._counting: set[str] = set()

    def check(self, manager: TaskManager, tenant: str, adding: int = 1) -> None:
        t = time.monotonic()
        with self._lock:
            cached = self._counts.get(tenant)
            # One submitter re-counts a stale tenant; the others go on with the count they have
            # (32 concurrent submits would otherwise run 32 COUNT queries at once).
            stale = cached is None or (t - cached[0] > self.refresh and tenant not in self._counting)
            if stale:
                self._counting.add(tenant)
        if stale:
            try:
                cached = (t, manager.store.count_unfinished(tenant))
            finally:
                with self._lock:
                    self._counting.discard(tenant)
        assert cached is not None
        if cached[1] + adding > self.limit:
            with self._lock:
                self._counts[tenant] = cached
            raise QuotaExceeded(
                f"tenant {tenant!r} has {cached[1]} unfinished tasks; the limit is {self.limit}",
                details={"tenant": tenant, "unfinished": cached[1], "limit": self.limit},
            )
        with self._lock:
            self._counts[tenant] = (cached[0], cached[1] + adding)


class TaskManager:
    """The verbs of Conveyor, over the store and the executor of one app."""

    #: keywords of ``submit`` that are options, not task params
    OPTIONS = ("tenant", "priority", "queue", "idempotency_key", "delay", "background_tasks")

    def __init__(
        self,
        *,
        settings: Settings,
        registry: Registry,
        store: Store,
        executor: Callable[[], Executor],
        hub: EventHub,
        metrics: Metrics,
        workloads: Collection[LoadedWorkload] = (),
    ) -> None:
        """Built from the parts it uses; ``executor`` is asked for on first use (the app builds it lazily)."""
        self.settings = settings
        self.registry = registry
        self.store = store
        self._executor_of = executor
        self.hub = hub
        self.metrics = metrics
        #: the loaded workloads, whose periodic jobs a Scheduler over this manager runs
        self.workloads = workloads
        self._quota = _QuotaGuard(settings.max_unfinished_per_tenant)
        self.aio = AsyncTaskManager(self)

    @property
    def executor(self) -> Executor:
        return self._executor_of()

    # -- submit ----------------------------------------------------------------

    def submit(
        self,
        task_type: str,
        *args: Any,
        tenant: str | None = None,
        priority: int | None = None,
        queue: str | None = None,
        idempotency_key: str | None = None,
        delay: float | None = None,
        background_tasks: Any = None,
        **params: Any,
    ) -> str:
        """Submit a task and return its id at once.

        Positional arguments fill the params model's fields in order, as in
        ``submit("process_speak_audio", resource_id, chunks)``.
        ``background_tasks`` (FastAPI's BackgroundTasks, seed 002): a task
        that runs in-process starts once the response has been sent, as the
        seed's BackgroundTasksExecutor did; one routed to Celery is sent at once.
        """
        tt = self.registry.get(task_type)
        bound = tt.bind(args, params)
        record = self.submit_task(
            task_type,
            bound,
            tenant=tenant,
            priority=priority,
            queue=queue,
            idempotency_key=idempotency_key,
            delay=delay,
            background_tasks=background_tasks,
        )
        return record.id

    def submit_task(
        self,
        task_type: str,
        params: Mapping[str, Any] | None = None,
        *,
        tenant: str | None = None,
        priority: int | None = None,
        queue: str | None = None,
        idempotency_key: str | None = None,
        delay: float | None = None,
        background_tasks: Any = None,
        task_id: str | None = None,
    ) -> TaskRecord:
        """Validate, write and dispatch one task; returns its record.

        ``task_id`` chooses the new task's id (Celery's ``apply_async(task_id=)``);
        submitting again with an id that exists returns that task.
        """
        request = SubmitRequest(
            task_type,
            params or {},
            tenant=tenant,
            priority=priority,
            queue=queue,
            idempotency_key=idempotency_key,
            delay=delay,
            task_id=task_id,
        )
        (result,) = self.submit_many([request], background_tasks=background_tasks)
        if isinstance(result, ConveyorError):
            raise result
        return result

    def submit_many(
        self, requests: Sequence[SubmitRequest], *, background_tasks: Any = None
    ) -> builtins.list[SubmitResult]:
        """Submit many tasks in one store commit; an answer per request, in order.

        Each answer is the task's record or the ``ConveyorError`` that refused
        that request (unknown type, bad params, quota, store or executor
        down); one bad request does not refuse the others. See ``conveyor.submission``.
        """
        return submit_many(self, requests, background_tasks=background_tasks)

    def check_quota(self, tenant: str, adding: int = 1) -> None:
        """QuotaExceeded if ``adding`` more unfinished tasks would put ``tenant`` past its cap."""
        self._quota.check(self, tenant, adding)

    def _dispatch_after_response(self, background_tasks: Any, record: TaskRecord) -> None:
        """Start an in-process task from FastAPI's BackgroundTasks, after the response is sent.

        Seed 002's WebSocket handler builds a ``BackgroundTasks()`` that no
        response ever runs; a timer starts the task after ``BACKGROUND_GRACE``
        seconds in that case, and whichever comes first wins.
        """
        once = threading.Lock()

        def start() -> None:
            if not once.acquire(blocking=False):
                return
            timer.cancel()
            try:
                self.executor.dispatch(record)
            except ExecutorError as e:
                self._refuse(record, e)

        timer = threading.Timer(BACKGROUND_GRACE, start)
        timer.daemon = True
        timer.start()
        background_tasks.add_task(start)

    def declared_queues(self) -> set[str]:
        """The queues a task may be sent to (``workload.declared_queues``)."""
        return declared_queues(self.registry, self.workloads)

    def _refuse(self, record: TaskRecord, error: ExecutorError) -> None:
        """A stored task that could not be handed to any worker ends FAILURE, not limbo."""
        self.store.apply([not_dispatched(record, error.message, at=now())])

    # -- read ------------------------------------------------------------------

    def get(self, task_id: str, *, tenant: str | None = None) -> TaskRecord:
        """The task's record; another tenant's task is TaskNotFound, as an unknown one."""
        return self.owned(task_id, self.store.get(task_id), tenant)

    @staticmethod
    def owned(task_id: str, record: TaskRecord | None, tenant: str | None) -> TaskRecord:
        """``record`` if it exists and belongs to ``tenant`` (any tenant: None); else TaskNotFound."""
        if record is None or (tenant is not None and record.tenant != tenant):
            raise TaskNotFound(task_id)
        return record

    def get_result(self, task_id: str, *, tenant: str | None = None) -> TaskResult | None:
        """Seed 002's lookup: the task's ``.status``, ``.result`` and ``.error``, or None for an unknown id."""
        from conveyor.aio import TaskResult

        record = self.store.get(task_id)
        if record is None or (tenant is not None and record.tenant != tenant):
            return None
        return TaskResult.of(record)

    def result(self, task_id: str, *, tenant: str | None = None) -> Any:
        """The value a finished task returned; TaskNotFinished while it runs."""
        return self.finished(task_id, tenant=tenant).result

    def finished(self, task_id: str, *, tenant: str | None = None) -> TaskRecord:
        """The record of a finished task (one read); TaskNotFinished while it runs."""
        return self.ensure_finished(self.get(task_id, tenant=tenant))

    @staticmethod
    def ensure_finished(record: TaskRecord) -> TaskRecord:
        """``record``, or TaskNotFinished while it runs."""
        if not record.finished:
            raise TaskNotFinished(
                f"task {record.id} is {record.state.value}; its result is not ready",
                details={"task_id": record.id, "status": record.state.value, "progress": record.progress},
            )
        return record

    def events(self, task_id: str, *, tenant: str | None = None, after_seq: int = 0) -> builtins.list[TaskEvent]:
        self.get(task_id, tenant=tenant)
        return self.store.events(task_id, after_seq)

    def wait(self, task_id: str, *, tenant: str | None = None, timeout: float | None = None) -> TaskRecord:
        """Block until the task has finished; returns its last record.

        Raises TimeoutError if ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.hub.watch(task_id) as changed:  # before the read: a change meanwhile still wakes us
                record = self.get(task_id, tenant=tenant)
                if record.finished:
                    return record
                left = POLL_INTERVAL if deadline is None else min(POLL_INTERVAL, deadline - time.monotonic())
                if left <= 0:
                    raise TimeoutError(f"task {task_id} still {record.state.value} after {timeout}s")
                changed.wait(left)

    def list(self, query: TaskQuery) -> Page:
        limit = max(1, min(query.limit, MAX_PAGE))
        if limit != query.limit:
            query = TaskQuery(**{**_query_dict(query), "limit": limit})
        return self.store.query(query)

    def queue_stats(self) -> builtins.list[QueueStats]:
        return self.store.queue_stats()

    # -- change ----------------------------------------------------------------

    def cancel_if_unfinished(self, task_id: str | None, *, tenant: str | None = None) -> TaskRecord | None:
        """Cancel the task unless it is gone or has finished (by now, maybe): a workload's delete goes on either way."""
        try:
            return self.cancel(task_id, tenant=tenant) if task_id else None
        except (InvalidTransition, TaskNotFound):
            return None

    def cancel(self, task_id: str, *, tenant: str | None = None, terminate: bool = False) -> TaskRecord:
        """Cancel a task: at once if it waits, cooperatively if it runs.

        With ``terminate`` a running task is not asked but stopped: its
        record ends CANCELLED now and the process running it is killed (the
        local pool replaces it; a Celery pool process is killed with SIGTERM
        and replaced). For tasks that never look at ``ctx.cancelled``.
        Raises InvalidTransition (409) if it has already finished.
        """
        record = self.get(task_id, tenant=tenant)
        if record.finished:
            raise InvalidTransition(
                f"task {task_id} has already finished ({record.state.value})",
                details={"task_id": task_id, "status": record.state.value},
            )
        cancelled = self.store.cancel_waiting(task_id, now())
        if cancelled is not None:
            self.executor.cancel(cancelled)
            self.hub.publish([task_id])
            return cancelled
        # It started meanwhile (or is running): ask the worker to stop it.
        if not self.store.request_cancel(task_id):
            return self.get(task_id, tenant=tenant)
        record = self.get(task_id, tenant=tenant)
        if terminate:
            return self._terminate(record)
        self.executor.cancel(record)
        return record

    def _terminate(self, record: TaskRecord) -> TaskRecord:
        """Record a running task as CANCELLED first, then kill what runs it.

        In that order: whatever the killed process would have reported
        afterwards (a lost worker, a redelivered message) finds the task
        finished and changes nothing.
        """
        change = outcome_change(
            record,
            Outcome(Status.CANCELLED),
            at=now(),
            result_ttl=self.settings.effective_result_ttl,
            progress=record.progress,
            cancelled_message="Terminated on request",
        )
        self.store.apply([change])
        self.executor.terminate(record)
        self.hub.publish([record.id])
        return self.get(record.id)

    def retry(self, task_id: str, *, tenant: str | None = None) -> TaskRecord:
        """Run a FAILURE or CANCELLED task again under the same id."""
        record = self.get(task_id, tenant=tenant)
        retryable = (Status.FAILURE, Status.CANCELLED)
        if record.state not in retryable:
            raise InvalidTransition(
                f"only FAILURE or CANCELLED tasks can be retried; task {task_id} is {record.state.value}",
                details={"task_id": task_id, "status": record.state.value},
            )
        tt = self.registry.get(record.type)
        engine = self.executor.route(tt)
        t = now()
        move = requeue(
            record,
            "Queued for retry",
            at=t,
            from_states=retryable,
            progress=0.0,
            result=None,
            error=None,
            cancel_requested=False,
            finished_at=None,
            expires_at=None,
            eta=None,
            executor=engine,
            **{"worker": None, "lease_expires_at": None, **self.executor.claim_fields(engine)},
        )
        reset = self.store.reset(move.task_id, move.fields, move.from_states, move.event)
        if reset is None:
            raise InvalidTransition(f"task {task_id} changed while being retried", details={"task_id": task_id})
        self.metrics.remember(task_id, record.type)
        try:
            self.executor.dispatch(reset)
        except ExecutorError as e:
            self._refuse(reset, e)
            raise
        self.hub.publish([task_id])
        return reset

    def purge_expired(self) -> int:
        return self.store.purge_expired(now())


def _query_dict(q: TaskQuery) -> dict[str, Any]:
    return {name: getattr(q, name) for name in q.__dataclass_fields__}


class AsyncTaskManager:
    """``TaskManager``'s verbs for ``async`` code."""

    def __init__(self, manager: TaskManager) -> None:
        self._m = manager

    async def submit(self, task_type: str, *args: Any, **kwargs: Any) -> str:
        return await anyio.to_thread.run_sync(lambda: self._m.submit(task_type, *args, **kwargs))

    async def submit_task(self, task_type: str, params: Mapping[str, Any] | None = None, **options: Any) -> TaskRecord:
        return await anyio.to_thread.run_sync(lambda: self._m.submit_task(task_type, params, **options))

    async def submit_many(
        self, requests: Sequence[SubmitRequest], *, background_tasks: Any = None
    ) -> builtins.list[SubmitResult]:
        return await anyio.to_thread.run_sync(lambda: self._m.submit_many(requests, background_tasks=background_tasks))

    async def get(self, task_id: str, *, tenant: str | None = None) -> TaskRecord:
        """The task's record, read in the store's own way for an event loop (``Store.aget``)."""
        return self._m.owned(task_id, await self._m.store.aget(task_id), tenant)

    get_result = get

    async def result(self, task_id: str, *, tenant: str | None = None) -> Any:
        return await anyio.to_thread.run_sync(lambda: self._m.result(task_id, tenant=tenant))

    async def finished(self, task_id: str, *, tenant: str | None = None) -> TaskRecord:
        return self._m.ensure_finished(await self.get(task_id, tenant=tenant))

    async def cancel(self, task_id: str, *, tenant: str | None = None, terminate: bool = False) -> TaskRecord:
        return await anyio.to_thread.run_sync(lambda: self._m.cancel(task_id, tenant=tenant, terminate=terminate))

    async def retry(self, task_id: str, *, tenant: str | None = None) -> TaskRecord:
        return await anyio.to_thread.run_sync(lambda: self._m.retry(task_id, tenant=tenant))

    async def list(self, query: TaskQuery) -> Page:
        return await anyio.to_thread.run_sync(lambda: self._m.list(query))

    async def events(self, task_id: str, *, tenant: str | None = None, after_seq: int = 0) -> builtins.list[TaskEvent]:
        """The task's timeline after ``after_seq``, read on the loop where the store can (``Store.aevents``):
        a live stream reads it on every change, and a thread hop each time queued a thousand streams."""
        await self.get(task_id, tenant=tenant)
        return await self._m.store.aevents(task_id, after_seq)

    async def wait(self, task_id: str, *, tenant: str | None = None, timeout: float | None = None) -> TaskRecord:
        deadline = None if timeout is None else time.monotonic() + timeout
        hub = self._m.hub
        while True:
            async with hub.watch_async(task_id) as changed:  # before the read, as in the sync wait
                record = await self.get(task_id, tenant=tenant)
                if record.state in FINAL_STATES:
                    return record
                left = POLL_INTERVAL if deadline is None else min(POLL_INTERVAL, deadline - time.monotonic())
                if left <= 0:
                    raise TimeoutError(f"task {task_id} still {record.state.value} after {timeout}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), left)
