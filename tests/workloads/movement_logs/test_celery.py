"""Seed 003 as deployed: Redis as broker and log queue, PostgreSQL, Celery workers running the batches."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from conveyor.api.main import create_app
from tests.conftest import AppFactory, CeleryWorkers, broker_url
from tests.workloads.movement_logs.conftest import SEED_BODY, empty_log_tables

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


def test_the_seed_client_flow_runs_on_celery_with_the_queue_in_the_brokers_redis(
    make_app: AppFactory, clean_postgres_url: str, celery_workers: CeleryWorkers, tmp_path: Path
) -> None:
    """add-movement → LLEN movement_logs is 1 → process/ on a Celery worker → movements/ has every field."""
    broker = broker_url("redis")
    redis.Redis.from_url(broker).delete("movement_logs", "movement_logs:batches")
    empty_log_tables(clean_postgres_url)
    celery_workers.start(broker, clean_postgres_url, workloads="system,movement_logs")
    app = make_app(
        start=False,
        executor="celery",
        broker_url=broker,
        database_url=clean_postgres_url,
        workloads=["system", "movement_logs"],
    )
    with TestClient(create_app(app, scheduler=False)) as client:
        r = client.post("/api/logs/add-movement/", json=SEED_BODY)
        assert r.status_code == 202, r.text
        # The operator's habit: redis-cli LLEN movement_logs, on the broker's Redis (no setting needed).
        assert redis.Redis.from_url(broker).llen("movement_logs") == 1
        assert client.get("/api/logs/health/").json() == {
            "redis": True,
            "celery": True,
            "database": True,
            "overall_status": "healthy",
        }
        task_id = client.post("/api/logs/process/").json()["task_id"]
        deadline = time.monotonic() + 60
        while (task := client.get(f"/api/v1/tasks/{task_id}").json())["status"] not in ("SUCCESS", "FAILURE"):
            assert time.monotonic() < deadline, task
            time.sleep(0.1)
        assert task["status"] == "SUCCESS", task
        assert task["result"]["backend"] == "redis"
        assert task["result"]["moved"] == 1
        page = client.get("/api/logs/movements/").json()
        assert page["count"] == 1
        assert {k: page["results"][0][k] for k in SEED_BODY} == SEED_BODY
        celery = client.get("/api/logs/test-celery/").json()
        assert celery["celery"] is True
        assert celery["executor"] == "celery"
    # Seed 003's programmatic form: process_movement_logs_batch.delay(); task.get().
    client_redis = redis.Redis.from_url(broker)
    client_redis.lpush(
        "movement_logs", '{"user_id": "U9", "track_id": 9, "bbox": [1, 2, 3, 4], "state": "w", "store": "S"}'
    )
    env = celery_workers.env(broker, clean_postgres_url, "system,movement_logs")
    env["CONVEYOR_DATA_DIR"] = str(tmp_path / "script")
    script = (
        "from conveyor.workloads.movement_logs.tasks import process_movement_logs_batch\n"
        "task = process_movement_logs_batch.delay()\n"
        "result = task.get(timeout=60)\n"
        "print(result['moved'], result['backend'])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["1", "redis"]
