"""Conveyor: the one object that wires settings, registry, store and executor."""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conveyor import resources
from conveyor.errors import ConfigurationError
from conveyor.executors.base import Executor
from conveyor.hub import EventHub
from conveyor.manager import TaskManager
from conveyor.metrics import Metrics
from conveyor.registry import Registry, default_registry
from conveyor.settings import Settings
from conveyor.stores.base import Change, Store, open_store
from conveyor.stores.writer import BufferedWriter

if TYPE_CHECKING:
    from conveyor.executors.local import LocalExecutor

__all__ = ["Conveyor", "get_conveyor", "get_task_manager", "load_workloads"]

log = logging.getLogger("conveyor")


def load_workloads(names: Sequence[str]) -> list[Any]:
    """Import ``conveyor.workloads.<name>`` (or a dotted module path) for each name."""
    modules = []
    for name in names:
        module_name = name if "." in name else f"conveyor.workloads.{name}"
        try:
            modules.append(importlib.import_module(module_name))
        except ModuleNotFoundError as e:
            if e.name == module_name:
                raise ConfigurationError(f"unknown workload {name!r} (no module {module_name})") from e
            raise
    return modules


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
    ) -> None:
        self.settings = settings or Settings()
        self.workloads = load_workloads(self.settings.workloads) if load else []
        self.registry = registry if registry is not None else default_registry
        self.store: Store = store or open_store(
            self.settings.resolved_database_url, result_ttl=self.settings.effective_result_ttl
        )
        self.hub = EventHub()
        self.metrics = Metrics()
        self.writer = BufferedWriter(self.store, interval=self.settings.flush_interval, on_flushed=self._flushed)
        self._executor = executor
        self.manager = TaskManager(self)
        self.scheduler: Any = None
        resources.install(resources.Resources(self.settings, store=self.store))
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
        from conveyor.executors.celery import CeleryExecutor

        if s.executor == "celery":
            return CeleryExecutor(self)
        if s.executor == "hybrid":
            from conveyor.executors.hybrid import HybridExecutor

            return HybridExecutor(self, self._local_executor(), CeleryExecutor(self))
        raise ConfigurationError(f"executor {s.executor!r} is not available in this build")

    def _local_executor(self) -> LocalExecutor:
        from conveyor.executors.local import LocalExecutor

        s = self.settings
        return LocalExecutor(
            registry=self.registry,
            store=self.store,
            writer=self.writer,
            data_dir=s.data_dir,
            concurrency=s.concurrency,
            prefetch=s.prefetch,
            lease_seconds=s.lease_seconds,
            result_ttl=s.effective_result_ttl,
            shutdown_timeout=s.shutdown_timeout,
            on_worker_start=self._worker_started,
        )

    def _worker_started(self) -> None:
        """Runs first in each forked local worker: connections the parent owns stay its own."""
        after_fork = getattr(self.store, "after_fork", None)
        if after_fork is not None:
            after_fork()
        # A fresh store: locks copied by fork may be held by a parent thread.
        shared = self.store if self.store.kind == "memory" else None
        resources.install(resources.Resources(self.settings, store=shared))

    def _flushed(self, changes: Sequence[Change]) -> None:
        self.metrics.record_changes(changes)
        self.hub.publish(c.task_id for c in changes)

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
            after_fork = getattr(self.store, "after_fork", None)
            if after_fork is not None:
                after_fork()  # the parent's connections stay the parent's
            self.writer = BufferedWriter(self.store, interval=self.settings.flush_interval, on_flushed=self._flushed)
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
            self.store.close()
            self._started = False

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
        try:
            self.store.ping()
            database: dict[str, Any] = {"status": "ok", "kind": self.store.kind}
        except Exception as e:
            database = {"status": "down", "kind": self.store.kind, "error": str(e)[:300]}
        if self.writer.last_error is not None and database["status"] == "ok":
            database = {"status": "degraded", "kind": self.store.kind, "error": str(self.writer.last_error)[:300]}
        try:
            executor = self.executor.health()
        except Exception as e:
            executor = {"status": "down", "kind": self.settings.executor, "error": str(e)[:300]}
        alive = int(executor.get("workers_alive", 0))
        report: dict[str, Any] = {"database": database, "executor": executor}
        if "broker" in executor:
            report["broker"] = executor["broker"]
        report["workers"] = {"status": "ok" if alive else "down", "alive": alive}
        parts = [database["status"], executor["status"]]
        if "down" in parts:
            overall = "unhealthy"
        elif all(p == "ok" for p in parts):
            overall = "healthy"
        else:
            overall = "degraded"
        report["overall_status"] = overall
        return report


_default: Conveyor | None = None
_default_lock = threading.Lock()


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
