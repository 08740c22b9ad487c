"""A store restarted, a database stopped under load, on the Celery engine: 503s meanwhile, then recovery, nothing lost.

Each test runs its own Redis or PostgreSQL server (tests/faults/services.py)
and its own Celery worker; the shared services are never stopped.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conveyor import Conveyor, Status
from conveyor.api.main import create_app
from tests.conftest import AppFactory, CeleryWorkers, broker_url
from tests.faults.figures import store_figures, wait_final
from tests.faults.report import FaultReport, FaultRow
from tests.faults.services import PrivatePostgres, PrivateRedis, rabbitmq_vhost

pytestmark = pytest.mark.slow


def successes_per_task(app: Conveyor, ids: list[str]) -> Counter[str]:
    """How many times each task reached SUCCESS on its timeline."""
    return Counter(
        task_id for task_id in ids for e in app.store.events(task_id) if e.kind == "state" and e.state is Status.SUCCESS
    )


@pytest.mark.rabbitmq
def test_a_restarted_redis_store_under_a_rabbitmq_broker_loses_no_task(
    make_app: AppFactory, tmp_path: Path, private_workers: CeleryWorkers, fault_report: FaultReport
) -> None:
    """Redis-only store, RabbitMQ broker: the store restarts with tasks queued; 503s meanwhile; all finish once."""
    redis = PrivateRedis(tmp_path / "redis").start()
    broker = rabbitmq_vhost("conveyor-faults")
    try:
        private_workers.start(broker, redis.url, concurrency=2, name="outage")
        app = make_app(start=False, database_url=redis.url, executor="celery", broker_url=broker, lease_seconds=6)
        with TestClient(create_app(app, scheduler=False)) as client:
            submit = {"task_type": "system.sleep", "params": {"seconds": 0.3, "steps": 3}}
            ids = []
            codes: list[int] = []
            for _ in range(30):
                r = client.post("/api/v1/tasks", json=submit)
                assert r.status_code == 202, r.text
                ids.append(r.json()["task_id"])
            codes += [202] * len(ids)
            redis.stop()  # with most of the 30 still queued in RabbitMQ
            try:
                health = client.get("/health").status_code
                assert health == 503
                refused = client.post("/api/v1/tasks", json=submit)
                assert refused.status_code == 503
                assert refused.json()["error"]["code"] == "store_unavailable"
                read = client.get(f"/api/v1/tasks/{ids[0]}").status_code
                assert read == 503
                codes += [health, refused.status_code, read]
                time.sleep(3)  # workers meet the outage: they must put their messages back, not drop them
            finally:
                redis.start()
            back = time.monotonic()
            deadline = back + 30
            while (health := client.get("/health").status_code) != 200:  # recovers by itself
                codes.append(health)
                assert time.monotonic() < deadline
                time.sleep(0.2)
            drained = wait_final(app.store, ids, timeout=120)
            recovery = time.monotonic() - back
            fault_report.add(
                FaultRow(
                    fault="Redis store stopped (SIGTERM) and restarted with a backlog queued",
                    setup="celery, RabbitMQ broker, Redis-only store",
                    submitted=31,
                    accepted=len(ids),
                    recovery_s=recovery,
                    notes="30 sleeps queued, the store down for 3 s; workers put their messages back",
                    **store_figures(app.store, ids),
                ).count_statuses(codes)
            )
            assert drained, Counter(r.state.value for r in app.store.get_many(ids))
            records = app.store.get_many(ids)
            assert [r.state for r in records] == [Status.SUCCESS] * len(ids)
            assert set(successes_per_task(app, ids).values()) == {1}
            after = client.post("/api/v1/tasks", json=submit)
            assert after.status_code == 202
    finally:
        redis.stop()


@pytest.mark.redis
def test_postgresql_stopped_for_ten_seconds_during_a_burst_answers_503_and_loses_nothing(
    make_app: AppFactory, tmp_path: Path, private_workers: CeleryWorkers, fault_report: FaultReport
) -> None:
    """A burst of submits on Celery (Redis broker) while PostgreSQL stops 10 s: only 202 or 503, each 202 runs once."""
    pg = PrivatePostgres().init()
    pg.start()
    broker = broker_url("redis").rsplit("/", 1)[0] + "/13"
    import redis as redis_client

    redis_client.Redis.from_url(broker).flushdb()
    try:
        private_workers.start(broker, pg.url, concurrency=2, name="burst")
        app = make_app(start=False, database_url=pg.url, executor="celery", broker_url=broker, lease_seconds=6)
        with TestClient(create_app(app, scheduler=False)) as client:
            accepted: list[str] = []
            codes: Counter[int] = Counter()
            stop = threading.Event()

            def burst() -> None:
                while not stop.is_set():
                    r = client.post("/api/v1/tasks", json={"task_type": "system.ping"})
                    codes[r.status_code] += 1
                    if r.status_code == 202:
                        accepted.append(r.json()["task_id"])
                    else:
                        assert r.json()["error"]["code"] == "store_unavailable", r.text
                    time.sleep(0.02)

            sender = threading.Thread(target=burst)
            sender.start()
            try:
                time.sleep(2)
                pg.stop()
                time.sleep(1)
                assert client.get("/health").status_code == 503
                time.sleep(9)  # ten seconds away in all
                pg.start()
                back = time.monotonic()
                time.sleep(3)
            finally:
                stop.set()
                sender.join(30)
            row = FaultRow(
                fault="PostgreSQL stopped for 10 s during a burst of submits",
                setup="celery, Redis broker, PostgreSQL store",
                submitted=sum(codes.values()),
                accepted=len(accepted),
                notes="pg_ctl stop -m fast, then start; one submit every 20 ms throughout",
            ).count_statuses(codes.elements())
            assert set(codes) == {202, 503}, codes  # never a 500
            deadline = time.monotonic() + 30
            while client.get("/health").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            drained = wait_final(app.store, accepted, timeout=120)
            row = dataclasses.replace(row, recovery_s=time.monotonic() - back, **store_figures(app.store, accepted))
            fault_report.add(row)
            assert drained, Counter(r.state.value for r in app.store.get_many(accepted))
            records = app.store.get_many(accepted)
            assert [r.state for r in records] == [Status.SUCCESS] * len(accepted)
            assert set(successes_per_task(app, accepted).values()) == {1}
    finally:
        pg.remove()
