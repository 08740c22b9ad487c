"""What runs inside a Celery worker: the task body around a Conveyor task type.

A message holds nothing but the task id. The worker claims the run in the
store (``Store.start_run``: PENDING/RETRY, or PROCESSING whose lease lapsed)
and drops the message if it cannot, renews the lease while the task runs,
and writes the outcome through its buffered writer. A retry is written, then
sent as a new message with its countdown.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from conveyor.context import TaskContext
from conveyor.errors import StoreError
from conveyor.executors.base import outcome_change, progress_change, result_ttl_for, run_task
from conveyor.executors.celery.deaths import ProcessDeaths, request_class, retry_fields
from conveyor.executors.leases import LeaseKeeper
from conveyor.records import Status, TaskRecord, now
from conveyor.registry import TaskType

if TYPE_CHECKING:
    from celery import Celery

    from conveyor.app import Conveyor

__all__ = ["STORE_RETRY_SECONDS", "TERMINATE_COMMAND", "install_tasks"]

log = logging.getLogger("conveyor.executors.celery")

#: the remote-control command that kills the pool process running a task
TERMINATE_COMMAND = "conveyor_terminate"
#: while the store cannot be reached, a received task is put back for this long
STORE_RETRY_SECONDS = 2.0


class _StoreSink:
    """Progress goes through the worker's buffered writer; cancel flags are read from the store.

    The cancel flag is read at most once a second per task, so a task that
    checks ``ctx.cancelled`` in a tight loop does not hammer the store.
    """

    def __init__(self, conveyor: Conveyor) -> None:
        self.conveyor = conveyor
        self._checked: dict[str, tuple[float, bool]] = {}

    def report(self, task_id: str, progress: float, message: str, meta: dict[str, Any]) -> None:
        self.conveyor.writer.put(progress_change(task_id, progress, message, meta, now()))

    def started(self, record: TaskRecord) -> None:
        """The claim has just read the record: its flag is fresh, no need to ask for a second."""
        self._checked[record.id] = (time.monotonic(), record.cancel_requested)

    def finished(self, task_id: str) -> None:
        self._checked.pop(task_id, None)

    def is_cancelled(self, task_id: str) -> bool:
        checked = self._checked.get(task_id)
        t = time.monotonic()
        if checked is not None and (checked[1] or t - checked[0] < 1.0):
            return checked[1]
        try:
            record = self.conveyor.store.get(task_id)
        except StoreError:
            # The store is away: go on as last known, and ask again in a second.
            self._checked[task_id] = (t, False)
            return False
        flag = record is None or record.cancel_requested or record.state is Status.CANCELLED
        self._checked[task_id] = (t, flag)
        return flag


class _ThisProcess:
    """The worker id and lease keeper of the current process.

    Prefork children are forked after import: each must have an id of its
    own, or a live sibling would keep renewing a dead child's leases.
    """

    def __init__(self, conveyor: Conveyor) -> None:
        self.conveyor = conveyor
        self._pid: int | None = None
        self._lock = threading.Lock()
        self.worker_id = ""
        self.leases: LeaseKeeper | None = None

    def get(self) -> tuple[str, LeaseKeeper]:
        pid = os.getpid()
        with self._lock:
            if self._pid != pid or self.leases is None:
                self._pid = pid
                self.worker_id = f"celery:{socket.gethostname()}:{pid}:{os.urandom(3).hex()}"
                conveyor = self.conveyor
                # The store is read each round: a prefork child opens its own after fork.
                self.leases = LeaseKeeper(lambda: conveyor.store, self.worker_id, conveyor.settings.lease_seconds)
            return self.worker_id, self.leases


def install_tasks(app: Celery, conveyor: Conveyor) -> None:
    """Register every task type of the registry on ``app``, the terminate command, and the flush at exit."""
    sink = _StoreSink(conveyor)
    here = _ThisProcess(conveyor)
    request = request_class(ProcessDeaths(conveyor, app))
    for task_type in conveyor.registry:
        _register_task(app, conveyor, task_type, sink, here, request)

    def flush_outcomes(**_: Any) -> None:
        # A pool process that stops (warm shutdown, max-tasks-per-child) writes
        # the outcomes still buffered before it goes.
        if conveyor.started_here:
            conveyor.writer.stop()

    from celery.signals import worker_process_shutdown

    worker_process_shutdown.connect(flush_outcomes, weak=False)
    _register_terminate_command()


def _register_terminate_command() -> None:
    """The remote-control command behind ``cancel(terminate=True)``, known to every worker of ours."""
    from celery.worker.control import control_command

    def conveyor_terminate(state: Any, task_id: str) -> dict[str, str]:
        from celery.worker import state as worker_state

        for request in list(worker_state.active_requests):
            if request.id == task_id:
                request.terminate(state.consumer.pool, signal="SIGTERM")
                return {"ok": f"terminated {task_id}"}
        return {"ok": "not running here"}

    conveyor_terminate.__name__ = TERMINATE_COMMAND
    control_command(args=[("task_id", str)], signature="<task_id>")(conveyor_terminate)


def _register_task(
    app: Celery, conveyor: Conveyor, task_type: TaskType, sink: _StoreSink, here: _ThisProcess, request: type
) -> None:
    # Celery's hard limit kills the pool process; the soft limit is raised by
    # run_task itself (SIGALRM in the pool process's main thread).
    decorate: Any = app.task(
        name=task_type.name,
        # Bound to this app only: a second Conveyor in one process must not
        # inherit tasks that close over the first one's store.
        shared=False,
        bind=True,
        acks_late=True,
        time_limit=task_type.time_limit,
        ignore_result=True,
        # Celery's own retries only put a message back while the store is away
        # (our retries, with their backoff, are recorded in the store): unbounded.
        max_retries=None,
        # The main process settles a task whose pool process died (deaths.py).
        Request=request,
    )

    def run(self: Any, task_id: str) -> None:
        worker_id, leases = here.get()
        _run_one(conveyor, task_type, task_id, sink, leases, worker_id, self)

    decorate(run)


def _run_one(
    conveyor: Conveyor,
    task_type: TaskType,
    task_id: str,
    sink: _StoreSink,
    leases: LeaseKeeper,
    worker_id: str,
    celery_task: Any,
) -> None:
    conveyor.ensure_started_here()
    store = conveyor.store
    lease = conveyor.settings.lease_seconds
    t = now()
    try:
        record = store.start_run(task_id, worker_id, t + lease, t)
    except StoreError as e:
        # Without the store nobody can say whether this task may run. Acking
        # the message would lose it; a new message with a countdown keeps it.
        log.warning("store unavailable, task %s put back for %.0fs: %s", task_id, STORE_RETRY_SECONDS, e.message)
        raise celery_task.retry(countdown=STORE_RETRY_SECONDS) from e
    if record is None:
        log.info("task %s is not runnable here (finished, cancelled or held elsewhere); dropping", task_id)
        return
    leases.ensure()
    sink.started(record)
    ctx = TaskContext(
        task_id=task_id,
        task_type=task_type.name,
        tenant=record.tenant,
        attempt=record.attempts,
        queue=record.queue,
        sink=sink,
        workdir_root=conveyor.settings.data_dir,
        resources=conveyor.resources,
    )
    try:
        outcome = run_task(task_type, ctx, record.params, max_retries=record.max_retries)
    finally:
        sink.finished(task_id)
    change = outcome_change(
        record, outcome, at=now(), result_ttl=result_ttl_for(task_type, conveyor.settings.effective_result_ttl)
    )
    if outcome.state is Status.RETRY:
        retry_fields(change.fields)
    else:
        change.fields["worker"] = worker_id
    conveyor.writer.put(change)
    # A final outcome is written by the writer thread within a flush interval,
    # batched with its neighbours', after the message is acknowledged: if this
    # process dies in between, the lease lapses and the task runs again
    # (at-least-once; the store still records one outcome). A retry is
    # written first, so that its message finds it waiting.
    if outcome.state is Status.RETRY:
        try:
            conveyor.writer.flush()
        except Exception as e:
            log.warning("retry of task %s not written yet (store unavailable): %s", task_id, e)
        try:
            celery_task.apply_async(
                args=[task_id],
                task_id=task_id,
                countdown=outcome.retry_in or 0,
                queue=record.queue,
                priority=record.priority,
            )
        except Exception as e:
            log.warning("retry of task %s not queued (broker unavailable); the reaper will send it: %s", task_id, e)
