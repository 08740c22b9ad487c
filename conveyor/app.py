"""Conveyor: the one object that wires settings, registry, store and executor."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from conveyor.errors import ConfigurationError
from conveyor.executors.base import Executor
from conveyor.hub import EventHub
from conveyor.manager import TaskManager
from conveyor.metrics import Metrics
from conveyor.notify import notifier_for
from conveyor.registry import Registry, default_registry
from conveyor.resources import Resources
from conveyor.settings import Settings
from conveyor.stores import open_store
from conveyor.stores.base import Change, Store
from conveyor.stores.writer import BufferedWriter
from conveyor.submission import SubmitRequest, SubmitResult
from conveyor.workload import WorkloadSet, load_workloads

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from conveyor.executors.celery import CeleryExecutor
    from conveyor.executors.local import LocalExecutor

__all__ = ["Conveyor", "get_conveyor", "get_task_manager", "set_default_conveyor"]

log = logging.getLogger("conveyor")


class Conveyor:
    """Settings, registry, store, writer and executor of one running Conveyor.

    Build one per process (or per test); ``start()`` opens the store and
    starts the executor, ``stop()`` drains them. Nothing is global.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: Registry | None = None,
        store: Store | None = None,
        executor: Executor | None = None,
        load: bool = True,
        workload_settings: Mapping[str, Mapping[str, Any] | BaseModel] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.workloads = (
            load_workloads(self.settings.workloads, store_kind=self.settings.store_kind, settings=workload_settings)
            if load
            else WorkloadSet([], {})
        )
        for name, reason in self.workloads.skipped.items():
            log.warning("workload %s is not loaded: %s", name, reason)
        self.registry = registry if registry is not None else default_registry
        self.store: Store = store or open_store(
            self.settings.resolved_database_url,
            result_ttl=self.settings.effective_result_ttl,
            migrations=self.workloads.migrations(),
            deadlines=self.settings.deadlines,
        )
        self.hub = EventHub()
        self.metrics = Metrics()
        #: tells the deployment's other processes which tasks this one changed (None: one process)
        self.notifier = notifier_for(self.settings)
        self.writer = self._new_writer()
        self._executor = executor
        self.manager = TaskManager(
            settings=self.settings,
            registry=self.registry,
            store=self.store,
            executor=lambda: self.executor,
            hub=self.hub,
            metrics=self.metrics,
            workloads=self.workloads,
        )
        self.scheduler: Any = None
        self.resources = Resources(
            self.settings, store=self.store, workload_settings={w.name: w.settings for w in self.workloads}
        )
        self._started = False
        self._started_pid: int | None = None
        self._lock = threading.Lock()

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = self._build_executor()
        return self._executor

    def _build_executor(self) -> Executor:
        s = self.settings
        if s.executor == "local":
            return self._local_executor()
        if s.executor == "celery":
            return self._celery_executor()
        if s.executor == "hybrid":
            from conveyor.executors.hybrid import HybridExecutor

            return HybridExecutor(self._local_executor(), self._celery_executor(), store=self.store, settings=s)
        raise ConfigurationError(f"executor {s.executor!r} is not available in this build")

    def _celery_executor(self) -> CeleryExecutor:
        from conveyor.executors.celery import CeleryExecutor, create_celery_app

        # The Celery app takes the whole Conveyor: inside a worker its tasks
        # start this app's store and writer anew in each pool process.
        return CeleryExecutor(create_celery_app(self), store=self.store, settings=self.settings, registry=self.registry)

    def _local_executor(self) -> LocalExecutor:
        from conveyor.executors.local import LocalExecutor

        s = self.settings
        return LocalExecutor(
            registry=self.registry,
            store=self.store,
            writer=self.writer,
            data_dir=s.data_dir,
            concurrency=s.concurrency,
            queues=s.queues,
            prefetch=s.prefetch,
            tenant_max_workers=s.tenant_max_workers,
            lease_seconds=s.lease_seconds,
            result_ttl=s.effective_result_ttl,
            shutdown_timeout=s.shutdown_timeout,
            on_worker_start=self._worker_started,
        )

    def _worker_started(self) -> Resources:
        """Runs first in each forked local worker: connections the parent owns stay its own."""
        self.store.after_fork()
        # Fresh connections: locks copied by fork may be held by a parent thread.
        return self.resources.forked()

    def workload_settings(self, name: str) -> Any:
        """A loaded workload's settings object (``CONVEYOR_<NAME>_*``)."""
        return self.resources.workload_settings(name)

    @property
    def engine(self) -> Engine:
        """The SQL engine of the store, for workloads' own tables; a clear error on a non-SQL store."""
        return self.resources.engine

    def submit_many(self, requests: Sequence[SubmitRequest]) -> list[SubmitResult]:
        """``TaskManager.submit_many``: many tasks, one store commit, an answer (record or error) per request."""
        return self.manager.submit_many(requests)

    def _new_writer(self) -> BufferedWriter:
        # A final state is written at once only when someone here waits on it (see BufferedWriter.put).
        writer = BufferedWriter(
            self.store, interval=self.settings.flush_interval, on_flushed=self._flushed, watched=self.hub.watched
        )
        self.hub.on_watch = writer.hurry
        return writer

    @property
    def hears_every_change(self) -> bool:
        """Does every change of a task reach this process's hub? (One process, or a notifier.)

        Streams poll the store on a slow timer when it does, on a quick one when
        a worker elsewhere could change their task unheard.
        """
        return self.settings.executor == "local" or self.notifier is not None

    def _flushed(self, changes: Sequence[Change]) -> None:
        self.metrics.record_changes(changes)
        ids = [c.task_id for c in changes]
        self.hub.publish(ids)
        if self.notifier is not None:
            # Another process (the API a client waits on) hears of it without polling.
            self.notifier.publish(ids)

    # -- lifecycle -------------------------------------------------------------

    def start(self, *, executor: bool = True, scheduler: bool = False) -> Conveyor:
        with self._lock:
            if self._started:
                return self
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            self.store.open()
            self.writer.start()
            if executor:
                self.executor.start()
                if self.notifier is not None:
                    # This process serves clients: wake them when a worker elsewhere changes their task.
                    self.notifier.listen(self.hub.publish)
            if scheduler:
                from conveyor.scheduler import Scheduler

                self.scheduler = Scheduler(self.manager)
                self.scheduler.start()
            self._started = True
            self._started_pid = os.getpid()
        return self

    @property
    def started_here(self) -> bool:
        """Whether this process (not a parent it was forked from) started the store and writer."""
        return self._started and self._started_pid == os.getpid()

    def ensure_started_here(self) -> None:
        """Start the store and writer in this process if it is not the one that started them.

        A Celery prefork worker forks its children after import: each child
        needs its own writer thread and its own database connections.
        """
        pid = os.getpid()
        if self._started_pid == pid:
            return
        with self._lock:
            if self._started_pid == pid:
                return
            self.store.after_fork()  # the parent's connections stay the parent's
            if self.notifier is not None:
                self.notifier.after_fork()
            self.writer = self._new_writer()
            self._started = False
        self.start(executor=False)

    def stop(self, *, graceful: bool = True) -> None:
        with self._lock:
            if not self._started:
                return
            if self.scheduler is not None:
                self.scheduler.stop()
                self.scheduler = None
            if self._executor is not None:
                self._executor.stop(graceful=graceful)
            self.writer.stop()
            if self.notifier is not None:
                self.notifier.close()
            self.store.close()
            self._started = False

    @contextlib.contextmanager
    def as_default(self) -> Iterator[Conveyor]:
        """Make this app the process's default (what ``fn.delay()`` and ``get_task_manager()`` use) for a while."""
        previous = set_default_conveyor(self)
        try:
            yield self
        finally:
            set_default_conveyor(previous)

    def __enter__(self) -> Conveyor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def health(self) -> dict[str, Any]:
        """``{database, executor, broker?, workers, overall_status}``; every part says ok or why not.

        ``broker`` appears when a broker is configured (celery, hybrid). The
        service is ``unhealthy`` when it cannot take work (database or executor
        down), ``degraded`` when it can but something is missing (no Celery
        worker alive, a write backlog), ``healthy`` otherwise.
        """
        # Both parts are asked at once, and neither may hold the answer past
        # health_timeout: a hung dependency is reported down, not waited for.
        deadline = time.monotonic() + self.settings.health_timeout
        ping = _Check(self.store.ping)
        executor_health = _Check(self.executor.health)
        try:
            ping.result(deadline)
            database: dict[str, Any] = {"status": "ok", "kind": self.store.kind}
        except Exception as e:
            database = {"status": "down", "kind": self.store.kind, "error": str(e)[:300]}
        if self.writer.last_error is not None and database["status"] == "ok":
            database = {"status": "degraded", "kind": self.store.kind, "error": str(self.writer.last_error)[:300]}
        try:
            executor = executor_health.result(deadline)
        except Exception as e:
            executor = {"status": "down", "kind": self.settings.executor, "error": str(e)[:300]}
            if self.settings.executor in ("celery", "hybrid"):
                # No answer in time says nothing good of the broker the executor could not reach.
                kind = self.settings.broker_url.split(":", 1)[0]
                executor["broker"] = {"status": "down", "kind": kind, "error": str(e)[:300]}
        alive = int(executor.get("workers_alive", 0))
        report: dict[str, Any] = {"database": database, "executor": executor}
        if "broker" in executor:
            report["broker"] = executor["broker"]
        report["workers"] = {"status": "ok" if alive else "down", "alive": alive}
        report["workloads"] = self.workloads.status()
        parts = [database["status"], executor["status"]]
        if "down" in parts:
            overall = "unhealthy"
        elif all(p == "ok" for p in parts):
            overall = "healthy"
        else:
            overall = "degraded"
        report["overall_status"] = overall
        return report


class _Check:
    """One health check, started at once in a thread of its own so that a hung one can be given up on."""

    def __init__(self, check: Callable[[], Any]) -> None:
        self._check = check
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        threading.Thread(target=self._run, name="conveyor-health", daemon=True).start()

    def _run(self) -> None:
        try:
            self._value = self._check()
        except BaseException as e:
            self._error = e
        finally:
            self._done.set()

    def result(self, deadline: float) -> Any:
        """The check's value; its error; or TimeoutError at ``deadline`` (``time.monotonic()``)."""
        if not self._done.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError("no answer within the health deadline")
        if self._error is not None:
            raise self._error
        return self._value


_default: Conveyor | None = None
_default_lock = threading.Lock()


def set_default_conveyor(conveyor: Conveyor | None) -> Conveyor | None:
    """Install ``conveyor`` as the process's default app; returns the one it replaces.

    A Celery worker installs the app it runs (``conveyor.worker``), so task
    code there that calls ``fn.delay()`` submits through the worker's store.
    """
    global _default
    with _default_lock:
        previous, _default = _default, conveyor
    return previous


def get_conveyor() -> Conveyor:
    """The process's default Conveyor, built from the environment and started on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Conveyor().start()
        return _default


def get_task_manager() -> TaskManager:
    """The default app's TaskManager (seed 002's entry point)."""
    return get_conveyor().manager
