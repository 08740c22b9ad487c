"""A waiter in the API process hears of a change another process wrote, without polling the store.

Celery workers write outcomes from their own processes; ``wait()``, ``.get()``
and SSE streams in the API process are woken by the deployment's notifier
(Redis pub/sub, or PostgreSQL LISTEN/NOTIFY). These tests make the poll so
slow that only a notification can end a wait in time.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import conveyor.manager
from conveyor import Settings
from conveyor.notify import MAX_IDS, Notifier, PostgresNotifier, RedisNotifier, notifier_for
from conveyor.records import Status
from tests.conftest import REDIS_URL, AppFactory, CeleryWorkers, broker_url, die_with_parent, require_redis

Heard = queue.Queue[list[str] | None]


def _listening(notifier: Notifier) -> Heard:
    heard: Heard = queue.Queue()
    notifier.listen(heard.put)
    return heard


def _next(heard: Heard, timeout: float = 10.0) -> list[str] | None:
    return heard.get(timeout=timeout)


def _until_heard(sender: Notifier, heard: Heard, ids: list[str]) -> list[str] | None:
    """Publish until the listener has subscribed and hears it (a subscription takes a moment to start)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        sender.publish(ids)
        try:
            return heard.get(timeout=0.3)
        except queue.Empty:
            continue
    raise AssertionError("the listener heard nothing")


@pytest.fixture
def redis_pair() -> Iterator[tuple[Notifier, Notifier]]:
    require_redis()
    a, b = RedisNotifier(f"{REDIS_URL}/0"), RedisNotifier(f"{REDIS_URL}/0")
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def postgres_pair(postgres_url: str) -> Iterator[tuple[Notifier, Notifier]]:
    a, b = PostgresNotifier(postgres_url), PostgresNotifier(postgres_url)
    yield a, b
    a.close()
    b.close()


PAIRS = [pytest.param("redis_pair", marks=pytest.mark.redis), pytest.param("postgres_pair", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("pair", PAIRS)
def test_a_listener_hears_other_processes_ids_and_not_its_own(pair: str, request: pytest.FixtureRequest) -> None:
    listener, other = request.getfixturevalue(pair)
    heard = _listening(listener)
    assert _until_heard(other, heard, ["task-1", "task-2"]) == ["task-1", "task-2"]
    listener.publish(["mine"])  # its own hub has already seen these
    other.publish(["task-3"])
    assert _next(heard) == ["task-3"]
    # A flush that changed more ids than a message holds wakes every waiter instead.
    other.publish([f"t{i}" for i in range(MAX_IDS + 1)])
    assert _next(heard) is None
    assert listener.received >= 3


@pytest.mark.redis
def test_a_listener_whose_redis_restarts_wakes_everyone_then_hears_again(tmp_path: Path) -> None:
    """Messages published while it was away are lost: it wakes every waiter once, and waiters re-read the store."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    require_redis()
    port = 6391

    def redis_server() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        time.sleep(0.3)
        return proc

    server = redis_server()
    listener, other = RedisNotifier(f"redis://127.0.0.1:{port}/0"), RedisNotifier(f"redis://127.0.0.1:{port}/0")
    try:
        heard = _listening(listener)
        assert _until_heard(other, heard, ["before"]) == ["before"]
        server.kill()
        server.wait(5)
        other.publish(["lost"])  # nobody can hear this one
        server = redis_server()
        assert _next(heard, timeout=15) is None  # resubscribed: "maybe anything changed"
        assert _until_heard(other, heard, ["after"]) == ["after"]
    finally:
        listener.close()
        other.close()
        server.kill()
        server.wait(5)


def test_which_channel_a_deployment_uses(tmp_path: Path) -> None:
    def kind(**settings: str) -> str | None:
        n = notifier_for(Settings(data_dir=tmp_path, **settings))  # type: ignore[arg-type]
        return None if n is None else n.kind

    assert kind() is None  # the local executor: one process hears itself
    assert kind(executor="celery", broker_url="redis://h:6379/0") == "redis"
    assert kind(executor="celery", broker_url="amqp://h//", database_url="redis://h:6379/3") == "redis"
    assert kind(executor="hybrid", broker_url="amqp://h//", database_url="postgresql://h/db") == "postgresql"
    assert kind(executor="celery", broker_url="amqp://h//") is None  # SQLite beside RabbitMQ: polling


@pytest.mark.parametrize(
    "broker",
    [
        pytest.param("redis", marks=[pytest.mark.redis, pytest.mark.postgres]),
        pytest.param("amqp", marks=[pytest.mark.rabbitmq, pytest.mark.postgres]),
    ],
)
def test_wait_on_celery_returns_when_the_worker_writes_the_outcome_not_at_the_next_poll(
    broker: str,
    clean_postgres_url: str,
    celery_workers: CeleryWorkers,
    make_app: AppFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis pub/sub beside a Redis broker; PostgreSQL NOTIFY beside RabbitMQ."""
    url = broker_url(broker)
    celery_workers.start(url, clean_postgres_url)
    app = make_app(executor="celery", broker_url=url, database_url=clean_postgres_url)
    assert app.notifier is not None
    assert app.notifier.kind == ("redis" if broker == "redis" else "postgresql")
    app.manager.wait(app.manager.submit("system.ping"), timeout=60)  # workers warm, listener subscribed
    monkeypatch.setattr(conveyor.manager, "POLL_INTERVAL", 120.0)
    for _ in range(3):
        task_id = app.manager.submit("system.ping", payload="woken")
        started = time.monotonic()
        record = app.manager.wait(task_id, timeout=60)  # unwoken, it would re-read only at its timeout
        assert time.monotonic() - started < 20, "wait() was not woken by the worker's change"
        assert record.state is Status.SUCCESS
        assert record.result is not None
        assert record.result["payload"] == "woken"
    assert app.notifier.received >= 3


@pytest.mark.redis
@pytest.mark.postgres
def test_a_task_stream_on_celery_ends_when_the_worker_writes_the_outcome_not_at_the_next_poll(
    clean_postgres_url: str,
    celery_workers: CeleryWorkers,
    make_app: AppFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a notifier the stream polls as slowly as a local one; the worker's outcome still ends it at once."""
    from fastapi.testclient import TestClient

    import conveyor.api.routes.tasks
    from conveyor.api.main import create_app
    from tests.integration.test_api import read_stream

    url = broker_url("redis")
    celery_workers.start(url, clean_postgres_url)
    app = make_app(start=False, executor="celery", broker_url=url, database_url=clean_postgres_url)
    assert app.hears_every_change
    monkeypatch.setattr(conveyor.api.routes.tasks, "STREAM_POLL", 120.0)
    with TestClient(create_app(app, scheduler=False)) as client:
        warm = client.post("/api/v1/tasks", json={"task_type": "system.ping"}).json()["task_id"]
        app.manager.wait(warm, timeout=60)  # workers warm, listener subscribed
        task_id = client.post("/api/v1/tasks", json={"task_type": "system.sleep", "params": {"seconds": 0.3}})
        started = time.monotonic()
        events = read_stream(client, f"/api/v1/tasks/{task_id.json()['task_id']}/events", {})
        assert time.monotonic() - started < 20, "the stream was not woken by the worker's change"
    assert events[-1][0] == "end"
    assert events[-1][2]["status"] == "SUCCESS"
