"""PostgreSQL goes away under a running API: 503s while it is gone, recovery by itself, nothing lost."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from conveyor.api.main import create_app
from tests.conftest import AppFactory
from tests.faults.proxy import Proxy

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_the_api_answers_503_while_the_database_is_down_and_recovers(
    make_app: AppFactory, clean_postgres_url: str
) -> None:
    proxy = Proxy(5432).start()
    url = clean_postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    app = make_app(start=False, database_url=url)
    with TestClient(create_app(app, scheduler=False)) as client:
        running = client.post(
            "/api/v1/tasks", json={"task_type": "system.sleep", "params": {"seconds": 1.5, "steps": 3}}
        ).json()["task_id"]
        time.sleep(0.3)
        proxy.stop()
        try:
            health = client.get("/health")
            assert health.status_code == 503
            assert health.json()["database"]["status"] == "down"
            submit = client.post("/api/v1/tasks", json={"task_type": "system.ping"})
            assert submit.status_code == 503
            assert submit.json()["error"]["code"] == "store_unavailable"
            assert submit.headers["retry-after"] == "5"
            assert client.get(f"/api/v1/tasks/{running}").status_code == 503
            time.sleep(2)  # the running task finishes while the database is away
        finally:
            proxy.start()
        deadline = time.monotonic() + 30
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        record = None
        while time.monotonic() < deadline:
            record = client.get(f"/api/v1/tasks/{running}").json()
            if record["status"] == "SUCCESS":
                break
            time.sleep(0.2)
        assert record is not None
        assert record["status"] == "SUCCESS"  # its outcome was kept and written on recovery
        after = client.post("/api/v1/tasks", json={"task_type": "system.ping"})
        assert after.status_code == 202
    proxy.stop()
