"""Celery beat over Conveyor's periodic-job table: ``conveyor beat``.

``celery -A conveyor.worker beat -S conveyor.executors.celery.beat:ConveyorScheduler`` runs the
workloads' ``periodic_jobs`` — the same table ``conveyor serve`` runs in-process
— and never ``beat_schedule``. A due entry is submitted through the
TaskManager (record first, then the message) under the slot's idempotency key,
so a beat and a ``serve`` scheduler, or two beats, over one store submit each
slot once. Beat never sends a bare Celery message.

The entries keep Celery's schedule types (an interval shows as ``<freq: …>``)
but ask the job for their slots. Celery's own semantics would disagree with
``serve``: its interval ``schedule`` counts from the last run and drifts off the
aligned slots, and its ``crontab`` needs day-of-month *and* day-of-week to
match where cron — and croniter, which ``serve`` uses — takes either.

Each tick writes a heartbeat (``<data_dir>/beat-heartbeat.json``) that
``conveyor inspect beat`` reads: the health check of a beat container.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.errors import MissingExtra
from conveyor.executors.celery.cluster import heartbeat_path
from conveyor.scheduler import PeriodicJob, collect_jobs, submit_slot

try:
    from celery.beat import Scheduler as _CeleryScheduler
    from celery.schedules import BaseSchedule, schedstate, schedule
except ImportError as e:  # pragma: no cover - installed with the extra
    raise MissingExtra("celery", "celery") from e

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.records import TaskRecord

__all__ = ["ConveyorScheduler", "CronSlots", "IntervalSlots", "slot_schedule"]

log = logging.getLogger("conveyor.beat")


def _timestamp(dt: datetime) -> float:
    # Celery hands naive datetimes around when enable_utc is on: they are UTC.
    return (dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)).timestamp()


class _JobSlots:
    """Due-ness from the job's own slots: due when a slot has passed since the last run.

    First in the bases of the schedules below, so these methods are the ones Celery calls.
    """

    job: PeriodicJob
    #: celery's BaseSchedule.now: the schedule's nowfun, else the app's clock
    now: Callable[[], datetime]

    def is_due(self, last_run_at: datetime) -> Any:
        """``(due, seconds until the next slot)``, as Celery's schedules answer."""
        t = _timestamp(self.now())
        due = _timestamp(last_run_at) < self.job.slot_at_or_before(t)
        return schedstate(is_due=due, next=max(0.0, self.job.next_after(t) - t))

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        t = _timestamp(self.now())
        return timedelta(seconds=max(0.0, self.job.next_after(t) - t))


class IntervalSlots(_JobSlots, schedule):  # type: ignore[misc]
    """``every=`` seconds, on multiples of it since the epoch (as ``serve`` fires them)."""

    def __init__(self, job: PeriodicJob, app: Any = None, nowfun: Callable[[], datetime] | None = None) -> None:
        assert job.every is not None
        self.job = job
        super().__init__(run_every=timedelta(seconds=job.every), app=app, nowfun=nowfun)


class CronSlots(_JobSlots, BaseSchedule):  # type: ignore[misc]
    """A cron line (UTC) read by croniter, as ``serve`` reads it."""

    def __init__(self, job: PeriodicJob, app: Any = None, nowfun: Callable[[], datetime] | None = None) -> None:
        assert job.cron is not None
        self.job = job
        super().__init__(app=app, nowfun=nowfun)

    def __repr__(self) -> str:
        return f"<cron: {self.job.cron} UTC>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CronSlots) and other.job == self.job

    def __hash__(self) -> int:
        return hash(self.job.cron)


def slot_schedule(
    job: PeriodicJob, app: Any = None, nowfun: Callable[[], datetime] | None = None
) -> IntervalSlots | CronSlots:
    return IntervalSlots(job, app, nowfun) if job.every is not None else CronSlots(job, app, nowfun)


class ConveyorScheduler(_CeleryScheduler):  # type: ignore[misc]
    """A beat scheduler whose table is Conveyor's and whose sends go through the TaskManager."""

    #: seconds between ticks at most (also the heartbeat's period when nothing is due)
    max_interval = 15

    #: beat's own broker connection is never used: the executor sends
    producer = None

    def setup_schedule(self) -> None:
        conveyor = self.conveyor
        conveyor.ensure_started_here()  # the store and its writer, in this process
        ignored = sorted(self.app.conf.beat_schedule or {})
        if ignored:
            log.warning(
                "ignoring beat_schedule entries %s: periodic work is declared as periodic_jobs in a workload, "
                "so that it is recorded in the store before it is sent",
                ", ".join(ignored),
            )
        self.jobs: dict[str, PeriodicJob] = {job.name: job for job in collect_jobs(conveyor.workloads)}
        self.last: dict[str, dict[str, Any]] = {}
        self._heartbeat_at = 0.0
        self.update_from_dict(
            {
                job.name: {"task": job.task_type, "schedule": slot_schedule(job, self.app), "kwargs": dict(job.params)}
                for job in self.jobs.values()
            }
        )
        log.info("conveyor beat: %d periodic job(s): %s", len(self.jobs), ", ".join(self.jobs) or "none")

    @property
    def conveyor(self) -> Conveyor:
        app_conveyor: Conveyor = self.app.conveyor
        return app_conveyor

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> TaskRecord | None:
        entry = self.reserve(entry) if advance else entry
        job = self.jobs[entry.name]
        slot = job.slot_at_or_before(time.time())
        record = submit_slot(self.conveyor.manager, job, slot)
        if record is None:
            return None
        # Another scheduler may have submitted this slot first: the record is
        # then that one, and no second message was sent.
        log.info(
            "periodic job %s, slot %s: task %s",
            job.name,
            datetime.fromtimestamp(slot, tz=UTC).isoformat(),
            record.id,
        )
        self.last[job.name] = {"slot": slot, "task_id": record.id}
        return record

    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval: float = super().tick(*args, **kwargs)
        if time.monotonic() - self._heartbeat_at >= 1.0:
            self._write_heartbeat()
        return interval

    def _write_heartbeat(self) -> None:
        t = time.time()
        report = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "at": t,
            "max_interval": self.max_interval,
            "jobs": {
                name: {
                    "task_type": job.task_type,
                    "schedule": f"every {job.every:g}s" if job.every is not None else f"cron {job.cron}",
                    "next": job.next_after(t),
                    **self.last.get(name, {}),
                }
                for name, job in self.jobs.items()
            },
        }
        path = heartbeat_path(self.conveyor.settings.data_dir)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(report))
            os.replace(tmp, path)
            self._heartbeat_at = time.monotonic()
        except OSError as e:  # a full or read-only disk must not stop the schedule
            log.warning("could not write the beat heartbeat %s: %s", path, e)

    def close(self) -> None:
        super().close()
        self.conveyor.stop()
        # a beat that stopped cleanly is not alive: say so at once, not after max_age
        path = heartbeat_path(self.conveyor.settings.data_dir)
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()

    @property
    def info(self) -> str:
        return f"conveyor periodic jobs ({self.conveyor.settings.resolved_database_url.split('@')[-1]})"
