"""The hybrid executor (seed 002): heavy types on Celery, light ones in-process, one API over both."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conveyor import Conveyor, Status, TaskContext
from conveyor.api.main import create_app
from conveyor.registry import Registry
from tests.conftest import AppFactory, CeleryWorkers, broker_url

#: a port nobody listens on: the broker of an outage
DEAD_BROKER = "redis://127.0.0.1:1/0"


def test_heavy_types_and_configured_types_route_to_celery_and_the_rest_stay_local(make_app: AppFactory) -> None:
    """Routing reads the type's ``heavy`` flag and CONVEYOR_CELERY_TASK_TYPES; nothing else goes to Celery."""
    registry = Registry()

    @registry.task("demo.transcribe", heavy=True)
    def transcribe(ctx: TaskContext) -> None:
        return None

    @registry.task("demo.rate")
    def rate(ctx: TaskContext) -> None:
        return None

    app = make_app(start=False, executor="hybrid", broker_url=broker_url("redis"), celery_task_types=["demo.sync"])
    executor = app.executor
    assert executor.route(registry.get("demo.transcribe")) == "celery"
    assert executor.route(registry.get("demo.rate")) == "local"

    @registry.task("demo.sync")
    def sync(ctx: TaskContext) -> None:
        return None

    assert executor.route(registry.get("demo.sync")) == "celery"


@pytest.mark.postgres
@pytest.mark.redis
def test_heavy_tasks_run_on_celery_and_light_ones_in_process_both_visible_through_one_api(
    make_app: AppFactory, clean_postgres_url: str, celery_workers: CeleryWorkers
) -> None:
    """system.ping is named a Celery type here; system.sleep stays in the API process's pool."""
    broker = broker_url("redis")
    celery_workers.start(broker, clean_postgres_url)
    app = make_app(
        start=False,
        database_url=clean_postgres_url,
        executor="hybrid",
        broker_url=broker,
        celery_task_types=["system.ping"],
    )
    with TestClient(create_app(app, scheduler=False)) as client:
        heavy = client.post("/api/v1/tasks", json={"task_type": "system.ping", "params": {"payload": "far"}})
        light = client.post("/api/v1/tasks", json={"task_type": "system.sleep", "params": {"seconds": 0, "steps": 1}})
        assert heavy.status_code == light.status_code == 202
        far = app.manager.wait(heavy.json()["task_id"], timeout=60)
        near = app.manager.wait(light.json()["task_id"], timeout=60)
        assert (far.state, near.state) == (Status.SUCCESS, Status.SUCCESS)
        assert (far.executor, near.executor) == ("celery", "local")
        assert str(far.worker).startswith("celery:")
        assert str(near.worker).startswith("local:")
        # The Celery worker is not this process nor one of its local pool's children.
        assert far.result["pid"] not in {os.getpid(), *(w["pid"] for w in app.executor.local.workers())}
        listing = client.get("/api/v1/tasks").json()
        assert {t["task_id"] for t in listing["data"]} == {far.id, near.id}
        health = client.get("/health").json()
        assert health["executor"]["kind"] == "hybrid"
        assert health["broker"]["status"] == "ok"


def test_a_dead_broker_sends_heavy_tasks_in_process_when_fallback_is_on(make_app: AppFactory, tmp_path: Path) -> None:
    """CONVEYOR_BROKER_DOWN=local: the task is not lost; it runs here and its message says why."""
    app = make_app(
        start=False,
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        executor="hybrid",
        broker_url=DEAD_BROKER,
        celery_task_types=["system.ping"],
    )
    with TestClient(create_app(app, scheduler=False)) as client:
        r = client.post("/api/v1/tasks", json={"task_type": "system.ping", "params": {"payload": "x"}})
        assert r.status_code == 202
        record = app.manager.wait(r.json()["task_id"], timeout=30)
        assert record.state is Status.SUCCESS
        assert record.executor == "local"
        messages = [e.message for e in app.store.events(record.id)]
        assert "Broker unavailable; running in-process instead" in messages
        # While the broker stays down, the next heavy task goes straight to the local pool.
        again = client.post("/api/v1/tasks", json={"task_type": "system.ping"}).json()["task_id"]
        assert app.manager.wait(again, timeout=30).executor == "local"
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["broker"]["status"] == "down"
        assert health.json()["overall_status"] == "degraded"


@pytest.mark.parametrize("executor", ["hybrid", "celery"])
def test_a_dead_broker_answers_503_when_fallback_is_off_and_the_record_says_why(
    make_app: AppFactory, tmp_path: Path, executor: str
) -> None:
    """CONVEYOR_BROKER_DOWN=reject (and plain Celery): a clear 503, and the stored task ends FAILURE, not limbo."""
    app: Conveyor = make_app(
        start=False,
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        executor=executor,
        broker_url=DEAD_BROKER,
        broker_down="reject",
        celery_task_types=["system.ping"],
    )
    with TestClient(create_app(app, scheduler=False)) as client:
        r = client.post("/api/v1/tasks", json={"task_type": "system.ping"})
        assert r.status_code == 503
        body = r.json()["error"]
        assert body["code"] == "executor_unavailable"
        assert "broker" in body["message"]
        assert "cannot take the task: connection refused" in body["message"]
        assert "127.0.0.1" not in body["message"]  # a tenant is not told where the broker lives
        listing = client.get("/api/v1/tasks").json()["data"]
        assert [(t["status"], t["message"].startswith("not dispatched")) for t in listing] == [("FAILURE", True)]
        if executor == "hybrid":  # light work goes on without the broker
            light = client.post("/api/v1/tasks", json={"task_type": "system.sleep", "params": {"seconds": 0}})
            assert light.status_code == 202
            assert app.manager.wait(light.json()["task_id"], timeout=30).state is Status.SUCCESS
        health = client.get("/health")
        assert health.json()["broker"]["status"] == "down"
        if executor == "celery":
            assert health.status_code == 503


def test_health_hides_dependency_errors_from_all_but_operators(make_app: AppFactory, tmp_path: Path) -> None:
    """A down broker's error names its host: operators read it, tenants and anonymous probes see "down" only."""
    app: Conveyor = make_app(
        start=False,
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        executor="hybrid",
        broker_url=DEAD_BROKER,
        api_keys="kt=tenant",
        operator_keys="ko=ops",
    )
    with TestClient(create_app(app, scheduler=False)) as client:
        operator = client.get("/health", headers={"Authorization": "Bearer ko"}).json()
        assert operator["broker"]["status"] == "down"
        assert operator["broker"]["error"]
        for headers in ({"Authorization": "Bearer kt"}, {}):
            seen = client.get("/health", headers=headers).json()
            assert seen["broker"] == {"status": "down", "kind": operator["broker"]["kind"]}
            assert "error" not in json.dumps(seen)
