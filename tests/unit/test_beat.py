"""Celery beat over Conveyor's periodic-job table: the same slots as ``serve``, submitted through the manager.

Runs on Celery's in-memory broker and Conveyor's in-memory store.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conveyor import PeriodicJob, Status
from conveyor.executors.celery import CeleryExecutor
from conveyor.executors.celery.beat import ConveyorScheduler, CronSlots, IntervalSlots, slot_schedule
from conveyor.executors.celery.cluster import beat_report
from tests.conftest import AppFactory


def _at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def _clock(t: datetime) -> Any:
    return lambda: t


def test_a_slot_at_or_before_is_the_one_a_waking_scheduler_fires() -> None:
    every = PeriodicJob("tick", "system.ping", every=60)
    assert every.slot_at_or_before(179.9) == 120.0
    assert every.slot_at_or_before(180.0) == 180.0
    nightly = PeriodicJob("nightly", "system.ping", cron="30 2 * * *")
    slot = _at(2026, 11, 23, 2, 30).timestamp()
    assert nightly.slot_at_or_before(slot) == slot
    assert nightly.slot_at_or_before(slot + 3600) == slot
    assert nightly.slot_at_or_before(slot - 1) == slot - 86400
    assert nightly.slot_key(slot) == f"periodic:nightly:{int(slot)}"


def test_an_interval_entry_is_due_on_the_epoch_aligned_slots_serve_uses() -> None:
    """Celery's own interval counts from the last run; ours fires at multiples of `every`, like serve."""
    job = PeriodicJob("minutely", "system.ping", every=60)
    last_run = _at(2026, 1, 1, 12, 0, 59)  # fired one slot late, 59 s after 12:00
    waiting = IntervalSlots(job, nowfun=_clock(_at(2026, 1, 1, 12, 0, 59, 500_000)))
    assert waiting.is_due(last_run) == (False, pytest.approx(0.5))
    due = IntervalSlots(job, nowfun=_clock(_at(2026, 1, 1, 12, 1, 0, 100_000)))
    assert due.is_due(last_run) == (True, pytest.approx(59.9))  # 12:01, not 12:01:59
    assert repr(due) == "<freq: 1.00 minute>"


def test_a_cron_entry_takes_either_day_field_as_cron_does() -> None:
    """`0 0 1 * 1` is the 1st or any Monday (cron, croniter, serve); Celery's crontab would wait for both."""
    job = PeriodicJob("mondays-and-firsts", "system.ping", cron="0 0 1 * 1")
    monday = _at(2026, 1, 5, 0, 0, 30)  # a Monday, not the 1st
    entry = slot_schedule(job, nowfun=_clock(monday))
    assert isinstance(entry, CronSlots)
    due, wait = entry.is_due(_at(2026, 1, 2))
    assert due is True
    assert wait == pytest.approx((_at(2026, 1, 12) - monday).total_seconds())  # the next Monday
    assert entry.is_due(_at(2026, 1, 5, 0, 0, 1)) == (False, pytest.approx(wait))


@pytest.fixture
def beat_app(make_app: AppFactory) -> Any:
    app = make_app(
        executor="celery",
        broker_url="memory://",
        database_url="memory://",
        workloads=["system", "tests.beat_workload"],
        run_executor=False,
    )
    assert isinstance(app.executor, CeleryExecutor)
    return app


def test_the_beat_table_is_the_workloads_periodic_jobs_and_nothing_else(beat_app: Any) -> None:
    """No celery.backend_cleanup, and a beat_schedule entry (a bare message) is ignored."""
    celery_app = beat_app.executor.app
    celery_app.conf.beat_schedule = {"bare": {"task": "system.ping", "schedule": 1.0}}
    scheduler = ConveyorScheduler(app=celery_app)
    assert set(scheduler.schedule) == {"purge-expired", "tick"}
    tick = scheduler.schedule["tick"]
    assert tick.task == "system.ping"
    assert isinstance(tick.schedule, IntervalSlots)


def test_due_entries_are_submitted_through_the_manager_once_per_slot(beat_app: Any, tmp_path: Path) -> None:
    """Two beats fire one slot: one record (with the slot's idempotency key) and one message on the broker."""
    executor = beat_app.executor
    before = executor.broker_depths()["default"]
    first, second = ConveyorScheduler(app=executor.app), ConveyorScheduler(app=executor.app)
    first.apply_entry(first.schedule["tick"])  # what beat's tick calls for a due entry
    b = second.apply_async(second.schedule["tick"])
    record = beat_app.store.get(first.last["tick"]["task_id"])
    assert b is not None
    assert b.id == record.id
    assert record.type == "system.ping"
    assert record.tenant == "system"
    assert record.params == {"payload": "beat"}
    assert record.state is Status.PENDING
    slot = int(time.time())
    assert record.idempotency_key in {f"periodic:tick:{slot}", f"periodic:tick:{slot - 1}"}
    assert executor.broker_depths()["default"] == before + 1  # the record's one message, nothing bare


def test_each_tick_leaves_a_heartbeat_that_a_clean_stop_removes(beat_app: Any) -> None:
    """`conveyor inspect beat` reads it: alive with the jobs' next slots, then gone after close()."""
    scheduler = ConveyorScheduler(app=beat_app.executor.app)
    scheduler.tick()
    data_dir = beat_app.settings.data_dir
    report = beat_report(data_dir, max_age=60)
    assert report["alive"] is True
    assert report["jobs"]["purge-expired"]["next"] % 3600 == 0
    assert report["jobs"]["tick"]["schedule"] == "every 1s"
    assert beat_report(data_dir, max_age=60)["age"] < 5
    scheduler.close()
    gone = beat_report(data_dir, max_age=60)
    assert gone["alive"] is False
    assert "no heartbeat" in gone["reason"]
