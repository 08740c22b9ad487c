"""Periodic jobs: one table, run in-process by ``serve`` or fed to Celery beat.

A job fires by submitting its task type like any client would. The
submission carries an idempotency key made of the job's name and the slot
time, so two schedulers over one store (two API replicas, or a restarted
one) submit each slot once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigurationError, ConveyorError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from conveyor.manager import TaskManager
    from conveyor.records import TaskRecord
    from conveyor.workload import LoadedWorkload

__all__ = ["PeriodicJob", "Scheduler", "collect_jobs", "submit_slot"]

log = logging.getLogger("conveyor.scheduler")


@dataclasses.dataclass(frozen=True)
class PeriodicJob:
    """Submit ``task_type`` with ``params`` every ``every`` seconds or on a ``cron`` line (UTC)."""

    name: str
    task_type: str
    _: dataclasses.KW_ONLY
    every: float | None = None
    cron: str | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    tenant: str = "system"

    def __post_init__(self) -> None:
        if (self.every is None) == (self.cron is None):
            raise ConfigurationError(f"periodic job {self.name!r} needs exactly one of every= or cron=")
        if self.every is not None and self.every <= 0:
            raise ConfigurationError(f"periodic job {self.name!r}: every must be positive")
        if self.cron is not None:
            from croniter import croniter

            if not croniter.is_valid(self.cron):
                raise ConfigurationError(f"periodic job {self.name!r}: {self.cron!r} is not a cron line")

    def next_after(self, t: float) -> float:
        """The first slot strictly after ``t`` (epoch seconds)."""
        if self.every is not None:
            return (int(t // self.every) + 1) * self.every
        from croniter import croniter

        assert self.cron is not None
        base = datetime.fromtimestamp(t, tz=UTC)
        return float(croniter(self.cron, base).get_next(float))

    def slot_at_or_before(self, t: float) -> float:
        """The latest slot not after ``t``: the one a scheduler waking at ``t`` fires."""
        if self.every is not None:
            return (t // self.every) * self.every
        from croniter import croniter

        assert self.cron is not None
        before = float(croniter(self.cron, datetime.fromtimestamp(t, tz=UTC)).get_prev(float))
        # get_prev is strictly before t: when t is itself a slot, that slot is the answer
        following = self.next_after(before)
        return following if following <= t else before

    def slot_key(self, slot: float) -> str:
        """The idempotency key of one slot: every scheduler over one store computes the same."""
        return f"periodic:{self.name}:{int(slot)}"


def collect_jobs(workloads: Iterable[LoadedWorkload]) -> list[PeriodicJob]:
    """Every loaded workload's periodic jobs: the one table both schedulers run."""
    return [job for w in workloads for job in w.declaration.periodic_jobs]


def submit_slot(manager: TaskManager, job: PeriodicJob, slot: float) -> TaskRecord | None:
    """Submit one slot of a job through the manager; None (and a warning) if it is refused.

    Both the in-process Scheduler and Celery beat (conveyor.executors.celery.beat) fire through
    here, so the record is written before any message is sent, and a slot
    fired by both is one task.
    """
    try:
        return manager.submit_task(job.task_type, job.params, tenant=job.tenant, idempotency_key=job.slot_key(slot))
    except ConveyorError as e:
        log.warning("periodic job %s could not be submitted: %s", job.name, e.message)
        return None


class Scheduler:
    """Runs the periodic-job table in a thread of this process."""

    def __init__(self, manager: TaskManager, jobs: list[PeriodicJob] | None = None) -> None:
        self.manager = manager
        self.jobs = jobs if jobs is not None else collect_jobs(manager.workloads)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fired: list[tuple[str, str]] = []
        #: each job's next slot, set on the first tick
        self._due: dict[str, float] | None = None

    def start(self) -> None:
        if self._thread is None and self.jobs:
            self._thread = threading.Thread(target=self._run, name="conveyor-scheduler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def fire(self, job: PeriodicJob, slot: float) -> str | None:
        record = submit_slot(self.manager, job, slot)
        if record is None:
            return None
        self.fired.append((job.name, record.id))
        return record.id

    def tick(self, t: float) -> float:
        """Fire every job whose slot is due at time ``t``; returns when the next slot is due.

        The thread calls this with the wall clock; a test may call it with any times.
        """
        if self._due is None:
            self._due = {job.name: job.next_after(t) for job in self.jobs}
        by_name = {job.name: job for job in self.jobs}
        for name, slot in list(self._due.items()):
            if slot <= t:
                self.fire(by_name[name], slot)
                self._due[name] = by_name[name].next_after(t)
        return min(self._due.values()) if self._due else t + 1.0

    def _run(self) -> None:
        while not self._stop.is_set():
            next_due = self.tick(time.time())
            self._stop.wait(min(max(0.05, next_due - time.time()), 1.0))
