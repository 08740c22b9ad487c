"""Seed 002's "Future Scaling (Hybrid)": the same calls; heavy tasks on a Celery worker over Redis, light in-process."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from conveyor import Conveyor
from conveyor.aio import get_task_manager
from conveyor.api.main import create_app
from tests.conftest import AppFactory
from tests.workloads.speech.conftest import (
    ALPHA,
    OPERATOR,
    SpeechWorkers,
    as_chunks,
    create_resource,
    flite_wav,
    fresh_redis_db,
    speech_app,
    wait_task,
)
from tests.workloads.speech.test_speech_stream import read_aloud

HEAVY = "process_speak_audio,calculate_all_ratings,sync_impressions_from_redis"


@pytest.fixture
def hybrid(
    make_app: AppFactory, clean_postgres_url: str, speech_workers: SpeechWorkers, private_redis: str
) -> Iterator[tuple[TestClient, Conveyor]]:
    """An API on the hybrid executor with ``CONVEYOR_HEAVY_TASKS`` as seed 002 lists them, and one Celery worker."""
    broker = fresh_redis_db(private_redis, 0)
    counters = fresh_redis_db(private_redis, 1)
    # The worker counts impressions where the API does: the same CONVEYOR_SPEECH_REDIS_URL.
    speech_workers.start(broker, clean_postgres_url, env={"CONVEYOR_SPEECH_REDIS_URL": counters})
    app = speech_app(
        make_app,
        clean_postgres_url,
        executor="hybrid",
        broker_url=broker,
        heavy_tasks=HEAVY,
        workload_settings={"speech": {"redis_url": counters}},
    )
    with TestClient(create_app(app, scheduler=False)) as client:
        yield client, app


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_speech_lands_on_the_celery_worker_and_calculate_rating_runs_in_process(
    hybrid: tuple[TestClient, Conveyor],
) -> None:
    """The WebSocket reading runs on Celery, the rating in the API process; each record says which."""
    client, app = hybrid
    text = "i am learning english"
    resource_id = create_resource(client, text, synthesize=False)
    messages = read_aloud(client, resource_id, as_chunks(flite_wav(text)))
    final = messages[-1]
    assert final["type"] == "result", final
    assert final["transcript"] == text
    steps = [(m["status"], m["progress"], m["message"]) for m in messages if m["type"] == "progress"]
    assert any(s == "PROCESSING" and 0 < p < 100 for s, p, _ in steps), steps
    speech_record = app.manager.get(final["task_id"])
    assert speech_record.executor == "celery"
    assert speech_record.worker is not None
    assert speech_record.worker.startswith("celery:")  # celery:<host>:<pid>:<id> of the worker process
    assert int(speech_record.worker.split(":")[2]) != os.getpid()

    r = client.post("/api/tasks/rating/recalculate", json={"resource_id": resource_id}, headers=ALPHA)
    assert r.json()["executor"] == "local"
    rating = wait_task(client, r.json()["task_id"])
    assert rating["status"] == "SUCCESS"
    assert rating["result"]["average_score"] == 100.0
    assert app.manager.get(r.json()["task_id"]).executor == "local"

    for _ in range(3):
        client.post(f"/api/resources/{resource_id}/impressions", headers=ALPHA)
    r = client.post("/api/tasks/impressions/sync", headers=OPERATOR)
    assert r.json()["executor"] == "celery"
    assert wait_task(client, r.json()["task_id"], headers=OPERATOR)["result"]["moved"] == 3
    r = client.post("/api/tasks/rating/recalculate", headers=ALPHA)
    assert r.json()["executor"] == "celery"
    assert wait_task(client, r.json()["task_id"])["result"]["resources"] == 1


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.anyio
async def test_the_seeds_submit_get_result_and_cancel_work_unchanged_on_the_hybrid_executor(
    hybrid: tuple[TestClient, Conveyor],
) -> None:
    """``await task_manager.submit(...)`` with positional args: heavy to Celery, light in-process."""
    client, app = hybrid
    resource_id = create_resource(client, "hello world", synthesize=False)
    task_manager = get_task_manager(app)
    heavy = await task_manager.submit(
        "process_speak_audio", resource_id, as_chunks(flite_wav("hello world")), "ann", tenant="alpha"
    )
    light = await task_manager.submit("calculate_rating", resource_id, tenant="alpha")
    done_heavy = await task_manager.wait(heavy, timeout=90)
    done_light = await task_manager.wait(light, timeout=30)
    assert (done_heavy.status, done_heavy.executor) == ("SUCCESS", "celery")
    assert done_heavy.result["transcript"] == "hello world"
    assert (done_light.status, done_light.executor) == ("SUCCESS", "local")
    assert await task_manager.get_result("00000000-0000-0000-0000-000000000000") is None
    assert await task_manager.cancel(heavy) is False  # finished already
