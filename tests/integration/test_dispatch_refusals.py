"""A refused submit is not a dead end, and a queue nobody serves is refused at once.

Found on the previous head: retrying a 503 with the same ``Idempotency-Key``
answered 202 for the stored FAILURE "not dispatched", which never ran; and
Celery accepted any queue name (202, then PENDING forever, the name showing in
queue lists).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from conveyor import TaskQuery
from conveyor.api.main import create_app
from conveyor.records import Status
from tests.conftest import AppFactory, die_with_parent, known_queues, require_redis

PORT = 16881


@pytest.mark.redis
def test_a_retry_with_the_same_idempotency_key_after_a_503_sends_the_task(make_app: AppFactory, tmp_path: Path) -> None:
    """503 while the broker is down; the same key once it is up: 202, the same task, now queued (not FAILURE)."""
    require_redis()  # the binary is the local one; the instance is the test's own
    app = make_app(
        start=False,
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        executor="celery",
        broker_url=f"redis://127.0.0.1:{PORT}/0",
    )
    key = {"Idempotency-Key": "order-42"}
    body = {"task_type": "system.ping", "params": {}}
    with TestClient(create_app(app, scheduler=False)) as client:
        first = client.post("/api/v1/tasks", json=body, headers=key)
        assert first.status_code == 503
        again = client.post("/api/v1/tasks", json=body, headers=key)
        assert again.status_code == 503  # still down: refused again, not a 202 for a dead record
        server = subprocess.Popen(
            ["redis-server", "--port", str(PORT), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    redis.Redis(port=PORT).ping()
                    break
                except redis.ConnectionError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            ok = client.post("/api/v1/tasks", json=body, headers=key)
            assert ok.status_code == 202, ok.text
            records = app.store.query(TaskQuery(tenant="local")).items
            assert len(records) == 1  # one task for the key, all along
            assert records[0].id == ok.json()["task_id"]
            assert records[0].state is Status.PENDING
            assert redis.Redis(port=PORT).llen("default") == 1  # its message is on the broker now
        finally:
            server.terminate()
            server.wait(10)


@pytest.mark.parametrize("executor", ["local", "celery"])
def test_a_queue_nobody_declared_is_422_naming_the_queue(make_app: AppFactory, executor: str) -> None:
    options = {"executor": "celery", "broker_url": "redis://127.0.0.1:1/0"} if executor == "celery" else {}
    app = make_app(start=False, database_url="memory://", **options)
    with TestClient(create_app(app, scheduler=False)) as client:
        r = client.post("/api/v1/tasks", json={"task_type": "system.ping", "queue": "typo-queue"})
        assert r.status_code == 422
        detail = r.json()["error"]["details"][0]
        assert detail["field"] == "queue"
        assert "typo-queue" in detail["message"]
        assert app.store.query(TaskQuery(tenant="local")).total == 0  # nothing stored
        declared = client.post("/api/v1/tasks", json={"task_type": "system.ping", "queue": "cpu"})
        assert declared.status_code in (202, 503)  # accepted (or the dead broker's 503), never a 422


def test_a_workloads_queues_are_declared_only_while_it_is_loaded(make_app: AppFactory) -> None:
    """The core declares ``default`` and ``maintenance``; each loaded workload adds its own (images: from its settings).

    The core alone is asked of a fresh interpreter: this one's registry holds every workload the suite loaded.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    assert known_queues(env={**env, "CONVEYOR_WORKLOADS": "system"}) == ["default", "maintenance"]
    assert "documents" in known_queues(env={**env, "CONVEYOR_WORKLOADS": "system,documents"})
    images = make_app(
        start=False,
        database_url="memory://",
        workloads=["system", "images"],
        workload_settings={"images": {"cpu_queue": "cpu-pool", "gpu_queue": "gpu-pool"}},
    )
    assert {"cpu-pool", "gpu-pool"} <= images.manager.declared_queues()
