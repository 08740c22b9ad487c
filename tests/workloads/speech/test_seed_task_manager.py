"""Seed 002's TaskManager calls, as its guide writes them, with one import changed.

``from app.core.tasks import get_task_manager`` becomes ``from conveyor.aio
import get_task_manager``; the two test bodies under "Seed 002's Testing
section" are the seed's own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter, BackgroundTasks, FastAPI
from fastapi.testclient import TestClient

import conveyor.app
from conveyor import Conveyor, Settings
from conveyor.aio import get_task_manager
from conveyor.records import Status
from tests.conftest import AppFactory
from tests.workloads.speech.conftest import SpeechWorkers, fresh_redis_db


@pytest.fixture(
    params=["local", pytest.param("hybrid", marks=[pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis])]
)
def default_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Conveyor]:
    """The process's default Conveyor, built from the environment as the seed's code gets it.

    ``local``: the seed's "BackgroundTasks" deployment, SQLite. ``hybrid``: its "Future Scaling",
    ``CONVEYOR_HEAVY_TASKS`` as the seed lists them, a Celery worker on Redis, PostgreSQL.
    """
    monkeypatch.setenv("CONVEYOR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CONVEYOR_WORKLOADS", "system,speech")
    monkeypatch.setenv("CONVEYOR_CONCURRENCY", "2")
    if request.param == "local":
        monkeypatch.setenv("CONVEYOR_DATABASE_URL", f"sqlite:///{tmp_path / 'seed.db'}")
    else:
        database_url: str = request.getfixturevalue("clean_postgres_url")
        broker = fresh_redis_db(request.getfixturevalue("private_redis"), 3)
        workers: SpeechWorkers = request.getfixturevalue("speech_workers")
        workers.start(broker, database_url)
        monkeypatch.setenv("CONVEYOR_DATABASE_URL", database_url)
        monkeypatch.setenv("CONVEYOR_EXECUTOR", "hybrid")
        monkeypatch.setenv("CONVEYOR_BROKER_URL", broker)
        monkeypatch.setenv(
            "CONVEYOR_HEAVY_TASKS", "process_speak_audio,calculate_all_ratings,sync_impressions_from_redis"
        )
    monkeypatch.setattr(conveyor.app, "_default", None)
    app = conveyor.app.get_conveyor()
    assert app.settings.executor == request.param
    try:
        yield app
    finally:
        app.stop(graceful=False)


# -- Seed 002's Testing section, verbatim -------------------------------------------


@pytest.mark.asyncio
async def test_task_submission(default_app: Conveyor) -> None:
    """The seed's unit test: submit a light task by name with a positional arg, then read it back."""
    task_manager = get_task_manager()
    task_id = await task_manager.submit("calculate_rating", "test-id")
    assert task_id is not None

    result = await task_manager.get_result(task_id)
    # Test based on expected behavior
    assert result is not None
    assert result.status in {"PENDING", "PROCESSING", "FAILURE"}
    final = await task_manager.wait(task_id, timeout=30)
    assert (final.status, final.error) == ("FAILURE", "resource test-id does not exist")


@pytest.mark.asyncio
async def test_background_task_execution(default_app: Conveyor) -> None:
    """The seed's integration test: a FastAPI BackgroundTasks passed along is accepted."""
    background_tasks = BackgroundTasks()
    task_manager = get_task_manager()

    task_id = await task_manager.submit("calculate_rating", "test-resource-id", background_tasks=background_tasks)

    # Verify task was queued
    assert task_id is not None
    assert len(background_tasks.tasks) == 1
    await background_tasks()  # what FastAPI does once the response is sent
    final = await task_manager.wait(task_id, timeout=30)
    assert final.status == "FAILURE"
    assert "test-resource-id" in (final.error or "")


@pytest.mark.asyncio
async def test_calculate_all_ratings_runs_where_heavy_tasks_say(default_app: Conveyor) -> None:
    """Seed 002's "Same code, but configuration determines executor": heavy on Celery under hybrid."""
    task_manager = get_task_manager()
    task_id = await task_manager.submit("calculate_all_ratings")
    final = await task_manager.wait(task_id, timeout=60)
    assert final.status == "SUCCESS"
    assert final.executor == ("celery" if default_app.settings.executor == "hybrid" else "local")


# -- the same verbs, looked at closer --------------------------------------------------


@pytest.mark.anyio
async def test_get_result_of_an_id_nobody_submitted_is_none(make_app: AppFactory) -> None:
    """Unknown ids are None (the seed's ``if result:``), never a made-up PENDING."""
    app = make_app()
    assert await get_task_manager(app).get_result("00000000-0000-0000-0000-000000000000") is None
    assert app.manager.get_result("nope") is None


@pytest.mark.anyio
async def test_cancel_answers_true_for_a_waiting_task_and_false_for_an_unknown_or_finished_one(
    make_app: AppFactory,
) -> None:
    """``cancelled = await task_manager.cancel(task_id)`` is a bool."""
    app = make_app()
    tm = get_task_manager(app)
    later = await tm.submit("system.sleep", seconds=0.1, steps=1, delay=60)
    assert await tm.cancel(later) is True
    assert (await tm.get_result(later)).status == "CANCELLED"  # type: ignore[union-attr]
    assert await tm.cancel(later) is False
    assert await tm.cancel("00000000-0000-0000-0000-000000000000") is False


@pytest.mark.anyio
async def test_a_running_task_asked_to_cancel_ends_cancelled(make_app: AppFactory) -> None:
    """Cancel of a started task is cooperative: True at once, CANCELLED once it looks."""
    app = make_app()
    tm = get_task_manager(app)
    task_id = await tm.submit("system.sleep", seconds=20, steps=200)
    deadline = time.monotonic() + 20
    while (await tm.get_result(task_id)).status != "PROCESSING":  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        await app.hub.wait_async(task_id, 0.05)
    assert await tm.cancel(task_id) is True
    assert (await tm.wait(task_id, timeout=20)).status == "CANCELLED"


def test_the_sync_face_takes_positional_args_and_background_tasks(make_app: AppFactory) -> None:
    """``from conveyor import get_task_manager`` style: the same calls without await."""
    app = make_app()
    bg = BackgroundTasks()
    task_id = app.manager.submit("calculate_rating", "r-1", background_tasks=bg)
    result = app.manager.get_result(task_id)
    assert result is not None
    assert (result.status, result.executor) == ("PENDING", "local")
    assert app.manager.get(task_id).state is Status.PENDING  # not started before the response
    for fn in bg.tasks:
        fn.func(*fn.args, **fn.kwargs)
    assert app.manager.wait(task_id, timeout=20).state is Status.FAILURE


def test_with_background_tasks_the_work_starts_after_the_response_is_sent(make_app: AppFactory) -> None:
    """Seed 002's BackgroundTasksExecutor: the endpoint's answer goes out before the task starts."""
    app = make_app()
    started_after_response: list[bool] = []
    responded = threading.Event()

    router = APIRouter()

    @router.post("/process")
    async def process_data(data: dict[str, str], background_tasks: BackgroundTasks) -> dict[str, str]:
        task_manager = get_task_manager(app)
        task_id = await task_manager.submit("system.ping", data["payload"], background_tasks=background_tasks)
        record = app.manager.get(task_id)
        started_after_response.append(record.state is Status.PENDING)
        responded.set()
        return {"task_id": task_id}

    api = FastAPI()
    api.include_router(router)
    with TestClient(api) as client:
        r = client.post("/process", json={"payload": "hi"})
    task_id = r.json()["task_id"]
    assert started_after_response == [True]
    record = app.manager.wait(task_id, timeout=10)
    assert record.result["payload"] == "hi"


def test_a_background_tasks_object_nobody_runs_still_starts_the_task(make_app: AppFactory) -> None:
    """The seed's WebSocket handler builds a BackgroundTasks() that no response runs: the task starts anyway."""
    app = make_app()
    t0 = time.monotonic()
    task_id = app.manager.submit("system.ping", "dropped", background_tasks=BackgroundTasks())
    record = app.manager.wait(task_id, timeout=15)
    assert record.state is Status.SUCCESS
    assert time.monotonic() - t0 < 10


def test_heavy_tasks_is_seed_002s_name_for_the_celery_set() -> None:
    """``CONVEYOR_HEAVY_TASKS`` parses as a list; the older ``celery_task_types`` still works beside it."""
    s = Settings(heavy_tasks="process_speak_audio, calculate_all_ratings,sync_impressions_from_redis")
    assert s.heavy_tasks == ["process_speak_audio", "calculate_all_ratings", "sync_impressions_from_redis"]
    assert Settings(celery_task_types="a,b").celery_task_types == ["a", "b"]


def test_the_hybrid_executor_routes_heavy_tasks_by_name_and_the_rest_in_process(make_app: AppFactory) -> None:
    """``CONVEYOR_HEAVY_TASKS`` sends a type to Celery; ``heavy=True`` does too; others stay local."""
    import conveyor.workloads.speech  # noqa: F401 - registers the seed's task types

    app = make_app(start=False, executor="hybrid", heavy_tasks="calculate_rating", broker_url="redis://127.0.0.1:1/0")
    registry = app.registry
    assert app.executor.route(registry.get("calculate_rating")) == "celery"  # named
    assert app.executor.route(registry.get("process_speak_audio")) == "celery"  # heavy=True
    assert app.executor.route(registry.get("cleanup_sessions")) == "local"


def test_with_the_broker_down_a_heavy_task_runs_in_process_and_its_record_says_so(make_app: AppFactory) -> None:
    """Hybrid, no broker reachable: calculate_all_ratings (heavy) runs locally; executor and message record it."""
    app = make_app(executor="hybrid", heavy_tasks="calculate_all_ratings", broker_url="redis://127.0.0.1:16799/0")
    task_id = app.manager.submit("calculate_all_ratings")
    record = app.manager.wait(task_id, timeout=60)
    assert record.state is Status.SUCCESS
    assert record.executor == "local"
    events = [e.message for e in app.manager.events(task_id)]
    assert "Broker unavailable; running in-process instead" in events
