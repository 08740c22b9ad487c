"""Periodic jobs: interval and cron slots, one submission per slot however many schedulers run."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from conveyor import PeriodicJob, Status
from conveyor.errors import ConfigurationError
from conveyor.scheduler import Scheduler, collect_jobs
from conveyor.workload import load_workloads
from tests.conftest import AppFactory


def test_interval_slots_are_aligned_multiples() -> None:
    job = PeriodicJob("tick", "system.ping", every=60)
    assert job.next_after(120.0) == 180.0
    assert job.next_after(121.5) == 180.0


def test_cron_slots_follow_the_cron_line_in_utc() -> None:
    job = PeriodicJob("nightly", "system.ping", cron="30 2 * * *")
    t = datetime(2026, 11, 22, 3, 0, tzinfo=UTC).timestamp()
    assert datetime.fromtimestamp(job.next_after(t), tz=UTC) == datetime(2026, 11, 23, 2, 30, tzinfo=UTC)


def test_a_job_needs_exactly_one_schedule() -> None:
    with pytest.raises(ConfigurationError):
        PeriodicJob("x", "system.ping")
    with pytest.raises(ConfigurationError):
        PeriodicJob("x", "system.ping", every=5, cron="* * * * *")
    with pytest.raises(ConfigurationError):
        PeriodicJob("x", "system.ping", cron="not a cron")


def test_the_system_workload_purges_expired_results_hourly() -> None:
    jobs = {j.name: j for j in collect_jobs(load_workloads(["system"], store_kind="memory"))}
    assert jobs["purge-expired"].task_type == "maintenance.purge_expired"
    assert jobs["purge-expired"].every == 3600


def test_two_schedulers_submit_each_slot_once(make_app: AppFactory) -> None:
    """Two API replicas each run a scheduler over one store; the slot's idempotency key dedupes."""
    app = make_app()
    job = PeriodicJob("every-second", "system.ping", every=1)
    a, b = Scheduler(app.manager, [job]), Scheduler(app.manager, [job])
    # Driven by a clock of the test's own: 1000.0 sets the first slot (1001), then
    # each replica wakes at its own moments through slots 1001, 1002 and 1003.
    for t in (1000.0, 1001.0, 1001.5, 1002.2, 1003.0, 1003.9):
        a.tick(t)
        b.tick(t + 0.01)
    fired_a, fired_b = {tid for _, tid in a.fired}, {tid for _, tid in b.fired}
    assert fired_a == fired_b  # both got the same task for every slot
    assert len(fired_a) == 3
    for task_id in fired_a:
        assert app.manager.wait(task_id, timeout=10).state is Status.SUCCESS


def test_the_purge_task_deletes_expired_records(make_app: AppFactory) -> None:
    app = make_app(result_ttl=0.2)
    old = app.manager.wait(app.manager.submit("system.ping"), timeout=10)
    assert old.expires_at is not None
    time.sleep(0.3)
    purge = app.manager.wait(app.manager.submit("maintenance.purge_expired"), timeout=10)
    assert purge.state is Status.SUCCESS
    assert purge.result["deleted"] >= 1
    assert app.store.get(old.id) is None
