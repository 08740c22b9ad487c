"""Cancel with terminate: a running task that ignores cancel requests is killed, and stays CANCELLED.

Also: a cancelled task whose message is delivered later (a worker that was
down, or restarted) is not run.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from conveyor import Conveyor, Status
from conveyor.api.main import create_app
from tests.conftest import AppFactory, CeleryWorkers
from tests.faults.services import fresh_broker

WORKLOADS = "system,tests.stubborn_workload"


def wait_state(app: Conveyor, task_id: str, state: Status, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while app.manager.get(task_id).state is not state:
        assert time.monotonic() < deadline, app.manager.get(task_id)
        app.hub.wait(task_id, 0.1)


def states_on_timeline(app: Conveyor, task_id: str) -> list[Status]:
    return [e.state for e in app.store.events(task_id) if e.kind == "state"]


def check_terminate(client: TestClient, app: Conveyor) -> None:
    """The shared scenario: a plain cancel does not stop it; terminate does, at once, for good."""
    task_id = client.post("/api/v1/tasks", json={"task_type": "tests.stubborn", "params": {"seconds": 30}}).json()[
        "task_id"
    ]
    wait_state(app, task_id, Status.PROCESSING)
    asked = client.post(f"/api/v1/tasks/{task_id}/cancel/").json()
    assert asked["status"] == "PROCESSING"  # asked to stop: it does not listen
    killed = client.post(f"/api/v1/tasks/{task_id}/cancel/", params={"terminate": "true"})
    assert killed.status_code == 200
    assert killed.json()["status"] == "CANCELLED"
    # The pool goes on serving, and the killed task is neither retried nor finished later.
    ping = client.post("/api/v1/tasks", json={"task_type": "system.ping"}).json()["task_id"]
    assert app.manager.wait(ping, timeout=60).state is Status.SUCCESS
    time.sleep(2)
    record = app.manager.get(task_id)
    assert record.state is Status.CANCELLED
    assert record.message == "Terminated on request"
    assert record.attempts == 1
    assert states_on_timeline(app, task_id) == [Status.PROCESSING, Status.CANCELLED]
    again = client.post(f"/api/v1/tasks/{task_id}/cancel/", params={"terminate": "true"})
    assert again.status_code == 409


def test_terminate_kills_a_running_local_task_that_ignores_cancel(make_app: AppFactory) -> None:
    app = make_app(start=False, workloads=WORKLOADS)
    with TestClient(create_app(app, scheduler=False)) as client:
        before = {w["pid"] for w in app.executor.workers()}  # type: ignore[attr-defined]
        check_terminate(client, app)
        after = {w["pid"] for w in app.executor.workers()}  # type: ignore[attr-defined]
        assert len(before - after) == 1  # one worker process was killed and replaced


@pytest.fixture
def own_broker() -> str:
    """Redis database 6, emptied: no other test's worker takes these messages."""
    return fresh_broker("redis", "", redis_db=6)


@pytest.mark.redis
@pytest.mark.postgres
def test_terminate_kills_a_running_celery_task_that_ignores_cancel(
    make_app: AppFactory, clean_postgres_url: str, own_broker: str, private_workers: CeleryWorkers
) -> None:
    private_workers.start(own_broker, clean_postgres_url, workloads=WORKLOADS)
    app = make_app(
        start=False, database_url=clean_postgres_url, executor="celery", broker_url=own_broker, workloads=WORKLOADS
    )
    with TestClient(create_app(app, scheduler=False)) as client:
        check_terminate(client, app)


@pytest.mark.redis
@pytest.mark.postgres
def test_a_cancelled_task_delivered_to_a_worker_later_is_not_run(
    make_app: AppFactory, clean_postgres_url: str, own_broker: str, private_workers: CeleryWorkers
) -> None:
    """Cancelled while no worker was up; the message stays queued; the worker that comes drops it."""
    app = make_app(start=False, database_url=clean_postgres_url, executor="celery", broker_url=own_broker)
    with TestClient(create_app(app, scheduler=False)) as client:
        task_id = client.post("/api/v1/tasks", json={"task_type": "system.ping"}).json()["task_id"]
        assert client.post(f"/api/v1/tasks/{task_id}/cancel/").json()["status"] == "CANCELLED"
        queues = {q["queue"]: q for q in client.get("/api/v1/queues").json()["data"]}
        assert queues["default"]["broker_depth"] == 1  # the message is still there
        private_workers.start(own_broker, clean_postgres_url)
        deadline = time.monotonic() + 30
        while app.executor.broker_depths()["default"]:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        after = client.post("/api/v1/tasks", json={"task_type": "system.ping"}).json()["task_id"]
        assert app.manager.wait(after, timeout=30).state is Status.SUCCESS  # the worker did take messages
        record = app.manager.get(task_id)
        assert (record.state, record.attempts) == (Status.CANCELLED, 0)
        assert Status.PROCESSING not in states_on_timeline(app, task_id)
