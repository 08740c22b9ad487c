"""A Celery worker killed mid-task: the task runs again on another worker and completes once."""

from __future__ import annotations

import os
import signal
import time

import pytest

from conveyor import Conveyor, Status
from tests.conftest import AppFactory, CeleryWorkers
from tests.faults.services import fresh_broker

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(
    params=[pytest.param("redis", marks=pytest.mark.redis), pytest.param("amqp", marks=pytest.mark.rabbitmq)]
)
def broker(request: pytest.FixtureRequest) -> str:
    return fresh_broker(request.param, "conveyor-kill", redis_db=13)


def wait_state(app: Conveyor, task_id: str, state: Status, timeout: float) -> float:
    start = time.monotonic()
    while app.manager.get(task_id).state is not state:
        assert time.monotonic() - start < timeout, app.manager.get(task_id)
        app.hub.wait(task_id, 0.1)
    return time.monotonic() - start


def test_a_killed_workers_task_runs_again_within_a_minute_and_completes_once(
    make_app: AppFactory, clean_postgres_url: str, broker: str, private_workers: CeleryWorkers
) -> None:
    victim = private_workers.start(broker, clean_postgres_url, concurrency=1, name="victim")
    app = make_app(database_url=clean_postgres_url, executor="celery", broker_url=broker, lease_seconds=6)
    m = app.manager
    long_one = m.submit("system.sleep", seconds=4, steps=8)
    wait_state(app, long_one, Status.PROCESSING, 30)
    queued = [m.submit("system.ping", payload=str(i)) for i in range(5)]
    os.killpg(victim.pid, signal.SIGKILL)  # the worker and its pool processes, mid-task
    victim.wait(10)
    killed_at = time.monotonic()
    private_workers.start(broker, clean_postgres_url, concurrency=2, name="rescuer")
    wait_state(app, long_one, Status.SUCCESS, 60)
    assert time.monotonic() - killed_at < 60
    record = m.get(long_one)
    assert record.attempts == 2
    states = [e.state for e in app.store.events(long_one) if e.kind == "state"]
    assert states.count(Status.SUCCESS) == 1
    for task_id in queued:  # queued work was not lost with the worker
        wait_state(app, task_id, Status.SUCCESS, 60)
        assert m.get(task_id).attempts == 1


def test_a_healthy_task_longer_than_its_lease_is_not_run_twice(
    make_app: AppFactory, clean_postgres_url: str, broker: str, private_workers: CeleryWorkers
) -> None:
    private_workers.start(broker, clean_postgres_url, concurrency=2, name="steady")
    app = make_app(database_url=clean_postgres_url, executor="celery", broker_url=broker, lease_seconds=6)
    task_id = app.manager.submit("system.sleep", seconds=14, steps=7)
    wait_state(app, task_id, Status.SUCCESS, 60)
    record = app.manager.get(task_id)
    assert record.attempts == 1
    assert [e.state for e in app.store.events(task_id) if e.kind == "state"] == [Status.PROCESSING, Status.SUCCESS]
