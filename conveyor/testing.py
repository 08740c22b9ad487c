"""Helpers for testing code that uses Conveyor (Conveyor's own tests use them too).

- ``MemoryStore``: the in-memory store, for an app with no database
  (``Conveyor(Settings(database_url="memory://"))``).
- ``RecordingSink`` and ``task_context``: run a task function directly, as a
  worker would, and see the progress it reported.
- ``JoinableExecutor``: an executor that runs nothing until the test calls
  ``join()``, then runs every dispatched task in the test's own thread
  (retries included) and returns when none is left, like Dramatiq's
  ``StubBroker.join`` or RQ's ``SimpleWorker.work(burst=True)``.
- ``wait_state``: poll a task until it reaches a state, with a deadline.
"""

from __future__ import annotations

import heapq
import itertools
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.context import TaskContext
from conveyor.errors import ConveyorError, ExecutorError
from conveyor.executors.base import result_ttl_for, run_task
from conveyor.records import Status, TaskRecord, new_task_id, now
from conveyor.registry import Registry, TaskType, default_registry
from conveyor.stores.base import Store
from conveyor.stores.memory import MemoryStore
from conveyor.transitions import outcome_change, progress_change

if TYPE_CHECKING:
    from conveyor.executors.base import Executor
    from conveyor.manager import TaskManager
    from conveyor.resources import Resources

__all__ = ["JoinableExecutor", "MemoryStore", "RecordingSink", "task_context", "wait_state"]


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


class _StoreSink:
    """Progress straight into the store (no writer: ``join()`` is synchronous); cancel flags from it."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def report(self, task_id: str, progress: float, message: str, meta: dict[str, Any]) -> None:
        self.store.apply([progress_change(task_id, progress, message, meta, now())])

    def is_cancelled(self, task_id: str) -> bool:
        record = self.store.get(task_id)
        return record is None or record.cancel_requested or record.state is Status.CANCELLED


class JoinableExecutor:
    """Runs dispatched tasks only when ``join()`` is called, in the calling thread.

    ``Conveyor(settings, store=store, executor=JoinableExecutor(store))``: a
    submit stores the record and queues its id here; ``join()`` claims each
    through the store (as a worker would: ``start_run``, attempts counted),
    runs it, records its outcome, and runs retries when they fall due.
    Order: higher priority first, then submission order. A test sees every
    state change in the store before ``join()`` returns, with no thread or
    process to wait for; an exception a task raises is its FAILURE, as in a
    worker, never the test's.
    """

    name = "local"

    def __init__(
        self,
        store: Store,
        registry: Registry | None = None,
        *,
        data_dir: Path | None = None,
        resources: Callable[[], Resources | None] | None = None,
        result_ttl: float = 3600.0,
        lease_seconds: float = 60.0,
    ) -> None:
        self.store = store
        self.registry = registry if registry is not None else default_registry
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="conveyor-joinable-"))
        self._resources = resources
        self.result_ttl = result_ttl
        self.lease_seconds = lease_seconds
        self.worker_id = f"joinable:{new_task_id()[:8]}"
        self._queue: list[tuple[float, int, int, str]] = []  # (eta, -priority, seq, id)
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.ran: list[str] = []  # task ids in the order their bodies ran, one entry per attempt

    # -- the Executor protocol -------------------------------------------------

    def start(self) -> None:
        pass

    def stop(self, *, graceful: bool = True) -> None:
        pass

    def route(self, task_type: TaskType) -> str:
        return "local"

    def claim_fields(self, engine: str, *, due: float | None = None) -> dict[str, Any]:
        return {}

    def dispatch(self, record: TaskRecord) -> None:
        self._push(record.id, record.eta or 0.0, record.priority)

    def dispatch_many(self, records: Sequence[TaskRecord]) -> list[ExecutorError | None]:
        for r in records:
            self.dispatch(r)
        return [None] * len(records)

    def cancel(self, record: TaskRecord) -> None:
        with self._lock:
            self._queue = [entry for entry in self._queue if entry[3] != record.id]
            heapq.heapify(self._queue)

    def terminate(self, record: TaskRecord) -> None:
        """Nothing runs between joins, so there is nothing to kill."""

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "kind": "joinable", "workers_alive": 1, "queued": len(self._queue)}

    def stats(self) -> dict[str, Any]:
        return {"queued": len(self._queue), "ran": len(self.ran)}

    def workers(self) -> list[dict[str, Any]]:
        return [{"name": self.worker_id, "alive": True, "active": 0, "reserved": len(self._queue)}]

    def broker_depths(self) -> dict[str, int] | None:
        return None

    # -- for tests -------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Tasks dispatched and not yet run (retries waiting for their time included)."""
        return len(self._queue)

    def join(self, *, timeout: float = 30.0) -> int:
        """Run every queued task, and the retries they schedule, until none is left; returns how many ran.

        A retry due later is waited for (its countdown is real time), up to
        ``timeout`` seconds in all: TimeoutError names the tasks still queued.
        """
        deadline = time.monotonic() + timeout
        ran = 0
        while True:
            with self._lock:
                if not self._queue:
                    return ran
                eta, _, _, task_id = self._queue[0]
                wait = eta - now()
                if wait <= 0:
                    heapq.heappop(self._queue)
            if wait > 0:
                if time.monotonic() + wait > deadline:
                    raise TimeoutError(f"{len(self._queue)} task(s) still queued after {timeout}s: {self._ids()}")
                time.sleep(wait)
                continue
            ran += self._run(task_id)

    def _ids(self) -> list[str]:
        with self._lock:
            return [entry[3] for entry in sorted(self._queue)]

    def _push(self, task_id: str, eta: float, priority: int) -> None:
        with self._lock:
            heapq.heappush(self._queue, (eta, -priority, next(self._seq), task_id))

    def _run(self, task_id: str) -> int:
        t = now()
        record = self.store.start_run(task_id, self.worker_id, t + self.lease_seconds, t)
        if record is None:
            return 0  # cancelled, finished, or not due: as a worker would, drop the message
        try:
            task_type = self.registry.get(record.type)
        except ConveyorError as e:
            raise AssertionError(f"task {task_id} has type {record.type!r}, unknown to this registry") from e
        ctx = TaskContext(
            task_id=task_id,
            task_type=task_type.name,
            tenant=record.tenant,
            attempt=record.attempts,
            queue=record.queue,
            sink=_StoreSink(self.store),
            workdir_root=self.data_dir,
            resources=self._resources() if self._resources is not None else None,
        )
        self.ran.append(task_id)
        outcome = run_task(task_type, ctx, record.params, max_retries=record.max_retries)
        change = outcome_change(record, outcome, at=now(), result_ttl=result_ttl_for(task_type, self.result_ttl))
        self.store.apply([change])
        if outcome.state is Status.RETRY:
            self._push(task_id, change.fields.get("eta") or now(), record.priority)
        return 1


def _is_an_executor(executor: JoinableExecutor) -> Executor:
    """Never called: mypy checks here that JoinableExecutor keeps up with the Executor protocol."""
    return executor
