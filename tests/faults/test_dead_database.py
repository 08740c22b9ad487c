"""PostgreSQL goes away under a running API: 503s while it is gone, recovery by itself, nothing lost."""

from __future__ import annotations

import dataclasses
import time

import pytest
from fastapi.testclient import TestClient

from conveyor.api.main import create_app
from tests.conftest import AppFactory
from tests.faults.figures import store_figures
from tests.faults.proxy import Proxy
from tests.faults.report import FaultReport, FaultRow

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_the_api_answers_503_while_the_database_is_down_and_recovers(
    make_app: AppFactory, clean_postgres_url: str, fault_report: FaultReport
) -> None:
    proxy = Proxy(5432).start()
    url = clean_postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    app = make_app(start=False, database_url=url)
    row = FaultRow(fault="PostgreSQL stopped (connections cut) with a task running", setup="local pool, PostgreSQL")
    with TestClient(create_app(app, scheduler=False)) as client:
        first = client.post("/api/v1/tasks", json={"task_type": "system.sleep", "params": {"seconds": 1.5, "steps": 3}})
        row.count_statuses([first.status_code])
        running = first.json()["task_id"]
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
            read = client.get(f"/api/v1/tasks/{running}")
            assert read.status_code == 503
            row.count_statuses([health.status_code, submit.status_code, read.status_code])
            time.sleep(2)  # the running task finishes while the database is away
        finally:
            proxy.start()
        back = time.monotonic()
        deadline = back + 30
        while (health_status := client.get("/health").status_code) != 200:
            row.count_statuses([health_status])
            assert time.monotonic() < deadline
            time.sleep(0.2)
        record = None
        while time.monotonic() < deadline:
            record = client.get(f"/api/v1/tasks/{running}").json()
            if record["status"] == "SUCCESS":
                break
            time.sleep(0.2)
        row.recovery_s = time.monotonic() - back
        assert record is not None
        assert record["status"] == "SUCCESS"  # its outcome was kept and written on recovery
        after = client.post("/api/v1/tasks", json={"task_type": "system.ping"})
        assert after.status_code == 202
        row.count_statuses([after.status_code])
        ids = [running, after.json()["task_id"]]
        app.manager.wait(ids[1], timeout=30)
        figures = store_figures(app.store, ids)
    proxy.stop()
    row = dataclasses.replace(row, submitted=3, accepted=2, **figures)
    row.notes = "a TCP proxy cut for 2 s; the running task's outcome waits in the writer and lands on recovery"
    fault_report.add(row)
    assert row.completed_once == row.accepted
    assert row.lost == 0
    assert row.server_errors == 0
