"""`conveyor serve` on the Celery engine, as deployed: 2,000 tasks through the API, two worker processes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from conveyor import Settings, Status
from conveyor.stores import open_store
from tests.acceptance.server import Server
from tests.conftest import CeleryWorkers, broker_url

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TASKS = 2000


async def submit_all(url: str, n: int) -> list[str]:
    """n submits from 100 concurrent clients; every one must be accepted."""
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        gate = asyncio.Semaphore(100)

        async def one(i: int) -> str:
            async with gate:
                r = await client.post("/api/v1/tasks", json={"task_type": "system.ping", "params": {"payload": str(i)}})
            assert r.status_code == 202, r.text
            task_id: str = r.json()["task_id"]
            return task_id

        return list(await asyncio.gather(*(one(i) for i in range(n))))


@pytest.mark.parametrize(
    "broker", [pytest.param("redis", marks=pytest.mark.redis), pytest.param("amqp", marks=pytest.mark.rabbitmq)]
)
def test_two_thousand_tasks_through_the_api_on_two_celery_workers_none_lost_none_twice(
    tmp_path: Path, clean_postgres_url: str, celery_workers: CeleryWorkers, broker: str
) -> None:
    """Every accepted task ends SUCCESS, with one attempt and one SUCCESS on its timeline."""
    url = broker_url(broker)
    celery_workers.start(url, clean_postgres_url, concurrency=2)
    env = {
        "CONVEYOR_EXECUTOR": "celery",
        "CONVEYOR_BROKER_URL": url,
        "CONVEYOR_DATABASE_URL": clean_postgres_url,
        "CONVEYOR_MAX_UNFINISHED_PER_TENANT": str(10 * TASKS),
    }
    with Server(tmp_path, env=env) as server:
        ids = asyncio.run(submit_all(server.url, TASKS))
        assert len(set(ids)) == TASKS
        with httpx.Client(base_url=server.url, timeout=30) as client:
            deadline = time.monotonic() + 240
            while client.get("/api/v1/tasks", params={"status": "SUCCESS", "limit": 1}).json()["count"] < TASKS:
                assert time.monotonic() < deadline
                time.sleep(0.5)
    store = open_store(Settings(database_url=clean_postgres_url).resolved_database_url)
    store.open()
    try:
        records = store.get_many(ids)
        assert len(records) == TASKS
        assert Counter(r.state for r in records) == {Status.SUCCESS: TASKS}
        assert {r.attempts for r in records} == {1}
        successes = Counter(i for i in ids for e in store.events(i) if e.kind == "state" and e.state is Status.SUCCESS)
        assert set(successes.values()) == {1}
        assert len(successes) == TASKS
    finally:
        store.close()
