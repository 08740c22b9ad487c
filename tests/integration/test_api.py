"""The HTTP API, end to end through FastAPI, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conveyor import Conveyor
from conveyor.api.main import create_app
from tests.conftest import AppFactory, broker_url

KEYS = "key-alpha=alpha,key-beta=beta"
ALPHA = {"Authorization": "Bearer key-alpha"}
BETA = {"X-API-Key": "key-beta"}
OPS = {"Authorization": "Bearer key-ops"}


BACKENDS = [
    pytest.param(("sqlite", "local"), id="sqlite-local"),
    pytest.param(("postgres", "local"), id="postgres-local", marks=pytest.mark.postgres),
    pytest.param(("redis", "local"), id="redis-local", marks=pytest.mark.redis),
    pytest.param(("postgres", "redis"), id="postgres-celery-redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
    pytest.param(
        ("postgres", "amqp"), id="postgres-celery-rabbitmq", marks=[pytest.mark.postgres, pytest.mark.rabbitmq]
    ),
    pytest.param(("redis", "amqp"), id="redis-celery-rabbitmq", marks=[pytest.mark.redis, pytest.mark.rabbitmq]),
]


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Session-scoped so that pytest runs all tests of one backend together (one worker start each)."""
    value: tuple[str, str] = request.param
    return value


@pytest.fixture
def api(
    request: pytest.FixtureRequest, backend: tuple[str, str], make_app: AppFactory, tmp_path: Path
) -> Iterator[tuple[TestClient, Conveyor]]:
    """The app on one store with one executor: local worker processes, or Celery workers on a broker."""
    store, engine = backend
    if store == "sqlite":
        url = f"sqlite:///{tmp_path / 'conveyor.db'}"
    else:
        url = request.getfixturevalue("clean_postgres_url" if store == "postgres" else "clean_redis_url")
    options: dict[str, Any] = {"database_url": url}
    if engine != "local":
        broker = broker_url(engine)
        request.getfixturevalue("celery_workers").start(broker, url)
        options.update(executor="celery", broker_url=broker)
    app = make_app(
        start=False,
        api_keys=KEYS,
        operator_keys="key-ops=ops",
        max_body_mb=0.05,
        max_unfinished_per_tenant=50,
        **options,
    )
    with TestClient(create_app(app, scheduler=False)) as client:
        yield client, app


def wait_done(client: TestClient, task_id: str, headers: dict[str, str] = ALPHA) -> dict[str, Any]:
    """Follow the task's SSE stream to its end, then read the full record."""
    with client.stream("GET", f"/api/v1/tasks/{task_id}/events", headers=headers) as stream:
        for _ in stream.iter_lines():
            pass
    record: dict[str, Any] = client.get(f"/api/v1/tasks/{task_id}", headers=headers).json()
    return record


def error(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    assert set(body) == {"code", "message", "details"}
    return body


def test_submit_answers_202_with_an_id_at_once_and_the_result_follows(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    r = client.post(
        "/api/v1/tasks", json={"task_type": "system.sleep", "params": {"seconds": 0.1, "steps": 2}}, headers=ALPHA
    )
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "PENDING"
    assert r.headers["location"] == f"/api/v1/tasks/{body['task_id']}"
    record = wait_done(client, body["task_id"])
    assert record["status"] == "SUCCESS"
    assert record["progress"] == 100
    result = client.get(f"/api/v1/tasks/{body['task_id']}/result/", headers=ALPHA).json()
    assert result["result"]["steps"] == 2


def test_seed_004_flat_submit_and_polling_shapes(api: tuple[TestClient, Conveyor]) -> None:
    """POST /submit/ with params beside task_type; /status/ answers the five fields the seed's client reads."""
    client, _ = api
    r = client.post("/api/v1/tasks/submit/", json={"task_type": "system.ping", "payload": "hi"}, headers=ALPHA)
    assert r.status_code == 202
    assert set(r.json()) >= {"task_id", "status", "message"}
    task_id = r.json()["task_id"]
    wait_done(client, task_id)
    status = client.get(f"/api/v1/tasks/{task_id}/status/", headers=ALPHA).json()
    assert status == {
        "task_id": task_id,
        "status": "SUCCESS",
        "progress": 100.0,
        "message": "Completed",
        "result_available": True,
    }
    assert client.get(f"/api/v1/tasks/{task_id}/result", headers=ALPHA).json()["result"]["payload"] == "hi"


def test_paths_answer_with_and_without_the_trailing_slash(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    task_id = client.post("/api/v1/tasks/", json={"task_type": "system.ping"}, headers=ALPHA).json()["task_id"]
    for path in (
        f"/api/v1/tasks/{task_id}",
        f"/api/v1/tasks/{task_id}/",
        f"/api/v1/tasks/{task_id}/status",
        f"/api/v1/tasks/{task_id}/status/",
        "/api/v1/tasks",
        "/api/v1/tasks/",
        "/api/v1/task-types/",
    ):
        assert client.get(path, headers=ALPHA).status_code == 200, path
    wait_done(client, task_id)
    assert client.post(f"/api/v1/tasks/{task_id}/cancel", headers=ALPHA).status_code == 409
    assert client.post(f"/api/v1/tasks/{task_id}/cancel/", headers=ALPHA).status_code == 409


def test_the_event_stream_carries_every_step_until_the_end(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    task_id = client.post(
        "/api/v1/tasks", json={"task_type": "system.sleep", "params": {"seconds": 0.6, "steps": 3}}, headers=ALPHA
    ).json()["task_id"]
    events: list[tuple[str, dict[str, Any]]] = []
    with client.stream("GET", f"/api/v1/tasks/{task_id}/events", headers=ALPHA) as stream:
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
    assert events[-1][0] == "end"
    assert events[-1][1]["status"] == "SUCCESS"
    progress = [e["progress"] for n, e in events if n == "progress"]
    assert progress == sorted(progress)
    assert {33.33, 66.67} <= set(progress)


def read_stream(client: TestClient, path: str, headers: dict[str, str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(event, id, data) of each event of an SSE stream, to its end."""
    events: list[tuple[str, str, dict[str, Any]]] = []
    with client.stream("GET", path, headers=headers) as stream:
        name, event_id = "", ""
        for line in stream.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("id:"):
                event_id = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, event_id, json.loads(line.split(":", 1)[1])))
                name, event_id = "", ""
    return events


def test_a_stream_reopened_with_last_event_id_resumes_after_the_step_it_names(
    api: tuple[TestClient, Conveyor],
) -> None:
    """EventSource reconnects with the last id it saw: it gets the steps after it, not the task again from the top."""
    client, _ = api
    task_id = client.post(
        "/api/v1/tasks", json={"task_type": "system.sleep", "params": {"seconds": 0.3, "steps": 3}}, headers=ALPHA
    ).json()["task_id"]
    wait_done(client, task_id)
    timeline = client.get(f"/api/v1/tasks/{task_id}/timeline", headers=ALPHA).json()["data"]
    first_step = next(e for e in timeline if e["kind"] == "progress")
    events = read_stream(client, f"/api/v1/tasks/{task_id}/events", {**ALPHA, "Last-Event-ID": str(first_step["seq"])})
    later = [e for e in timeline if e["seq"] > first_step["seq"] and e["status"] != "SUCCESS"]
    steps = [(int(i), d["progress"]) for n, i, d in events if n == "progress"][: len(later)]
    assert steps == [(e["seq"], round(e["progress"], 2)) for e in later]
    assert round(first_step["progress"], 2) not in [d["progress"] for _, _, d in events]
    assert events[-1][0] == "end"
    assert events[-1][2]["status"] == "SUCCESS"
    # a fresh connection (or an id that is no step) starts from the current state
    fresh = read_stream(client, f"/api/v1/tasks/{task_id}/events", {**ALPHA, "Last-Event-ID": "x"})
    assert [n for n, _, _ in fresh] == ["progress", "progress", "end"]


def test_cancel_a_waiting_task_and_retry_it(api: tuple[TestClient, Conveyor]) -> None:
    client, app = api
    blockers = [
        client.post(
            "/api/v1/tasks", json={"task_type": "system.sleep", "params": {"seconds": 1, "steps": 1}}, headers=ALPHA
        ).json()["task_id"]
        for _ in range(app.settings.concurrency * 2)
    ]
    waiting = client.post("/api/v1/tasks", json={"task_type": "system.ping"}, headers=ALPHA).json()["task_id"]
    r = client.post(f"/api/v1/tasks/{waiting}/cancel/", headers=ALPHA)
    assert r.status_code == 200
    assert r.json()["status"] == "CANCELLED"
    retried = client.post(f"/api/v1/tasks/{waiting}/retry/", headers=ALPHA)
    assert retried.status_code == 202
    assert retried.json()["task_id"] == waiting
    assert wait_done(client, waiting)["status"] == "SUCCESS"
    assert client.post(f"/api/v1/tasks/{waiting}/retry/", headers=ALPHA).status_code == 409
    for b in blockers:
        client.post(f"/api/v1/tasks/{b}/cancel/", headers=ALPHA)


def test_cancel_a_running_task(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    task_id = client.post(
        "/api/v1/tasks", json={"task_type": "system.sleep", "params": {"seconds": 30, "steps": 300}}, headers=ALPHA
    ).json()["task_id"]
    with client.stream("GET", f"/api/v1/tasks/{task_id}/events", headers=ALPHA) as stream:
        for line in stream.iter_lines():
            if '"PROCESSING"' in line:
                break
    r = client.post(f"/api/v1/tasks/{task_id}/cancel/", headers=ALPHA)
    assert r.json()["message"] == "Cancellation requested"
    assert wait_done(client, task_id)["status"] == "CANCELLED"


def test_list_filters_and_pages_the_callers_tasks(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    ids = [
        client.post("/api/v1/tasks", json={"task_type": "system.ping"}, headers=ALPHA).json()["task_id"]
        for _ in range(5)
    ]
    client.post("/api/v1/tasks", json={"task_type": "system.ping"}, headers=BETA)
    for i in ids:
        wait_done(client, i)
    page = client.get("/api/v1/tasks?limit=2&offset=1", headers=ALPHA).json()
    assert page["count"] == 5
    assert [t["task_id"] for t in page["data"]] == [ids[3], ids[2]]
    done = client.get("/api/v1/tasks?status=success,failure&type=system.ping", headers=ALPHA).json()
    assert done["count"] == 5
    bad = client.get("/api/v1/tasks?status=DONE", headers=ALPHA)
    assert bad.status_code == 422
    assert error(bad)["details"][0]["field"] == "status"
    assert error(client.get("/api/v1/tasks?limit=100000", headers=ALPHA))["details"][0]["field"] == "limit"


def test_task_types_are_listed_with_their_params_schema(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    types = {t["name"]: t for t in client.get("/api/v1/task-types", headers=ALPHA).json()["data"]}
    assert {"system.ping", "system.sleep"} <= set(types)
    assert "maintenance.purge_expired" not in types  # internal: the scheduler's and operators' only
    schema = types["system.sleep"]["params_schema"]
    assert schema["properties"]["seconds"]["maximum"] == 86_400
    assert client.get("/api/v1/task-types/system.sleep", headers=ALPHA).json()["queue"] == "default"
    assert client.get("/api/v1/task-types/nope", headers=ALPHA).status_code == 400


def test_health_queues_and_metrics(api: tuple[TestClient, Conveyor]) -> None:
    client, app = api
    wait_done(client, client.post("/api/v1/tasks", json={"task_type": "system.ping"}, headers=ALPHA).json()["task_id"])
    health = client.get("/health", headers=OPS).json()
    assert health["overall_status"] == "healthy"
    assert set(health) >= {"database", "executor", "workers", "overall_status"}
    assert health["workers"]["alive"] >= 1
    queues = {q["queue"]: q for q in client.get("/api/v1/queues", headers=OPS).json()["data"]}
    assert queues["default"]["counts"]["SUCCESS"] >= 1
    metrics = client.get("/metrics", headers=OPS).text
    assert 'conveyor_tasks_total{event="submitted",task_type="system.ping"} 1.0' in metrics
    assert 'conveyor_queue_depth{queue="default"}' in metrics
    assert 'conveyor_tasks_stored{queue="default",state="SUCCESS"} 1.0' in metrics
    if app.settings.executor == "celery":
        # the broker is named in /health, and its own queue depth is read (nothing waits now)
        assert health["broker"]["status"] == "ok"
        assert queues["default"]["broker_depth"] == 0
        assert 'conveyor_broker_queue_depth{queue="default"} 0.0' in metrics
    else:
        assert "broker" not in health
        assert queues["default"]["broker_depth"] is None
    if app.settings.executor == "local":  # under Celery, outcomes are counted in the workers
        assert 'conveyor_tasks_total{event="succeeded",task_type="system.ping"} 1.0' in metrics
        assert "conveyor_task_duration_seconds_bucket" in metrics


def test_idempotency_key_header_returns_the_same_task(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    headers = {**ALPHA, "Idempotency-Key": "pay-7"}
    a = client.post("/api/v1/tasks", json={"task_type": "system.ping"}, headers=headers).json()["task_id"]
    b = client.post("/api/v1/tasks", json={"task_type": "system.ping"}, headers=headers).json()["task_id"]
    assert a == b


# -- errors: every one a clear JSON answer -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "bad_request"),
        (b"", "application/json", 400, "bad_request"),
        (b"[1, 2]", "application/json", 400, "bad_request"),
        (b'"text"', "application/json", 400, "bad_request"),
        (b"task_type=system.ping", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (
            b'{"task_type": "system.sleep", "params": {"seconds": 1' + b"0" * 5000 + b"}}",
            "application/json",
            400,
            "bad_request",
        ),
        (b"[" * 100_000, "application/json", 413, "payload_too_large"),
        (b"[" * 20_000 + b"]" * 20_000, "application/json", 400, "bad_request"),
    ],
    ids=["malformed", "empty", "array", "string", "form", "5000-digit-number", "oversized", "nesting-bomb"],
)
def test_unreadable_bodies_get_a_4xx_that_says_why(
    api: tuple[TestClient, Conveyor], body: bytes, content_type: str, status: int, code: str
) -> None:
    client, _ = api
    r = client.post("/api/v1/tasks", content=body, headers={**ALPHA, "Content-Type": content_type})
    assert r.status_code == status
    assert error(r)["code"] == code


def test_an_unknown_type_is_refused_with_the_known_ones(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    r = client.post("/api/v1/tasks", json={"task_type": "image.magic"}, headers=ALPHA)
    assert r.status_code == 400
    assert "system.ping" in error(r)["details"]["known_types"]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"params": {}}, {"task_type"}),
        ({"task_type": "system.sleep", "params": {"seconds": -1}}, {"seconds"}),
        ({"task_type": "system.sleep", "params": {"seconds": 1e12, "steps": 0}}, {"seconds", "steps"}),
        ({"task_type": "system.sleep", "params": {"seconds": "soon"}}, {"seconds"}),
        ({"task_type": "system.sleep", "params": {"secs": 1}}, {"secs"}),
        ({"task_type": "system.sleep", "params": [1]}, {"params"}),
        ({"task_type": "system.ping", "priority": 99}, {"priority"}),
        ({"task_type": "system.ping", "priority": "high"}, {"priority"}),
        ({"task_type": "system.ping", "delay": -5}, {"delay"}),
        ({"task_type": "system.ping", "params": {}, "payload": "x"}, {"payload"}),
    ],
    ids=[
        "missing-type",
        "negative",
        "huge-and-zero",
        "wrong-type",
        "unknown-field",
        "params-not-object",
        "priority-range",
        "priority-type",
        "negative-delay",
        "stray-field",
    ],
)
def test_invalid_fields_are_named_in_a_422(
    api: tuple[TestClient, Conveyor], body: dict[str, Any], fields: set[str]
) -> None:
    client, _ = api
    r = client.post("/api/v1/tasks", json=body, headers=ALPHA)
    assert r.status_code == 422
    assert {d["field"] for d in error(r)["details"]} == fields


def test_a_streamed_body_over_the_limit_is_cut_off_with_413(api: tuple[TestClient, Conveyor]) -> None:
    """No Content-Length to trust: the body is counted as it arrives."""
    client, _ = api

    def chunks() -> Iterator[bytes]:
        yield b'{"task_type": "system.ping", "payload": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    r = client.post("/api/v1/tasks", content=chunks(), headers={**ALPHA, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert error(r)["details"]["max_bytes"] == 52428


def test_unknown_and_foreign_tasks_are_404_alike(api: tuple[TestClient, Conveyor]) -> None:
    """Another tenant's task must not be confirmed to exist."""
    client, _ = api
    task_id = client.post("/api/v1/tasks", json={"task_type": "system.ping"}, headers=ALPHA).json()["task_id"]
    for path in ("", "/status/", "/result/", "/events", "/timeline"):
        r = client.get(f"/api/v1/tasks/{task_id}{path}", headers=BETA)
        assert r.status_code == 404, path
        assert error(r)["code"] == "task_not_found"
    assert client.post(f"/api/v1/tasks/{task_id}/cancel/", headers=BETA).status_code == 404
    assert client.post(f"/api/v1/tasks/{task_id}/retry/", headers=BETA).status_code == 404
    assert error(client.get("/api/v1/tasks/not-a-task", headers=ALPHA))["code"] == "task_not_found"
    assert client.get("/api/v1/tasks", headers=BETA).json()["count"] == 0


def test_a_missing_or_wrong_key_is_401(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    r = client.post("/api/v1/tasks", json={"task_type": "system.ping"})
    assert r.status_code == 401
    assert error(r)["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/tasks", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/v1/tasks", headers={"Authorization": "Basic a2V5"}).status_code == 401
    # A key in the URL is only for live streams (EventSource sends no headers).
    assert client.get("/api/v1/tasks?api_key=key-alpha").status_code == 401


def test_a_stream_token_opens_a_stream_and_nothing_else(api: tuple[TestClient, Conveyor]) -> None:
    """The dashboard's way: a short-lived token for ``/events`` URLs, useless elsewhere, bad ones refused."""
    from conveyor.api import tokens

    client, app = api
    task_id = client.post("/api/v1/tasks", json={"task_type": "system.ping"}, headers=ALPHA).json()["task_id"]
    answer = client.post("/api/v1/session/stream-token", headers=ALPHA).json()
    assert answer["expires_in"] == tokens.STREAM_TOKEN_TTL
    token = answer["token"]
    with client.stream("GET", f"/api/v1/tasks/{task_id}/events?stream_token={token}") as stream:
        assert stream.status_code == 200
    assert client.get(f"/api/v1/tasks/{task_id}?stream_token={token}").status_code == 401
    assert client.get(f"/api/v1/tasks/{task_id}/events?stream_token={token[:-2]}xx").status_code == 401
    expired = tokens.issue(app.settings, "alpha", False, now=0)
    assert client.get(f"/api/v1/tasks/{task_id}/events?stream_token={expired}").status_code == 401
    # another tenant's token does not open alpha's task
    beta = client.post("/api/v1/session/stream-token", headers=BETA).json()["token"]
    assert client.get(f"/api/v1/tasks/{task_id}/events?stream_token={beta}").status_code == 404


def test_credentials_in_a_url_never_reach_the_access_log() -> None:
    import logging

    from conveyor.api.accesslog import RedactCredentials

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/api/v1/events?ids=a&api_key=key-alpha&stream_token=abc.def", "1.1", 200),
        None,
    )
    RedactCredentials().filter(record)
    line = record.getMessage()
    assert "key-alpha" not in line
    assert "abc.def" not in line
    assert "api_key=***" in line
    from conveyor.api import accesslog

    accesslog.install()
    # a WebSocket handshake is logged by uvicorn's error logger, with its query
    assert any(isinstance(f, RedactCredentials) for f in logging.getLogger("uvicorn.error").filters)


def test_result_of_an_unfinished_task_is_409(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    task_id = client.post(
        "/api/v1/tasks", json={"task_type": "system.sleep", "params": {"seconds": 2, "steps": 20}}, headers=ALPHA
    ).json()["task_id"]
    r = client.get(f"/api/v1/tasks/{task_id}/result/", headers=ALPHA)
    assert r.status_code == 409
    assert error(r)["code"] == "task_not_finished"
    client.post(f"/api/v1/tasks/{task_id}/cancel/", headers=ALPHA)


def test_a_failed_task_answers_with_its_error(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    task_id = client.post(
        "/api/v1/tasks",
        json={"task_type": "system.sleep", "params": {"seconds": 0, "steps": 1, "fail": True}},
        headers=ALPHA,
    ).json()["task_id"]
    record = wait_done(client, task_id)
    assert record["status"] == "FAILURE"
    assert record["error"]["message"] == "failed on purpose (fail=true)"
    result = client.get(f"/api/v1/tasks/{task_id}/result/", headers=ALPHA).json()
    assert result["error"]["type"] == "RuntimeError"


def test_the_tenant_cap_answers_429(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    body = {"task_type": "system.sleep", "params": {"seconds": 5, "steps": 5}, "delay": 60}
    codes = [client.post("/api/v1/tasks", json=body, headers=BETA).status_code for _ in range(51)]
    assert codes[:50] == [202] * 50
    assert codes[50] == 429


def test_unknown_routes_and_methods_answer_json(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    assert error(client.get("/api/v1/nothing-here"))["code"] == "not_found"
    assert error(client.delete("/api/v1/tasks", headers=ALPHA))["code"] == "method_not_allowed"


def test_seed_002_paths_answer_too(api: tuple[TestClient, Conveyor]) -> None:
    """/api/tasks/{id}/status and /api/tasks/{id}/cancel, as seed 002's clients call them."""
    client, _ = api
    task_id = client.post(
        "/api/v1/tasks", json={"task_type": "system.sleep", "params": {"seconds": 5, "steps": 50}}, headers=ALPHA
    ).json()["task_id"]
    assert client.get(f"/api/tasks/{task_id}/status", headers=ALPHA).json()["task_id"] == task_id
    assert client.post(f"/api/tasks/{task_id}/cancel", headers=ALPHA).status_code == 200
    assert wait_done(client, task_id)["status"] == "CANCELLED"
    assert client.get(f"/api/tasks/{task_id}/status", headers=BETA).status_code == 404


def test_the_backend_is_the_one_named(api: tuple[TestClient, Conveyor], request: pytest.FixtureRequest) -> None:
    """Guards the fixture itself: a Celery run must really go through a Celery worker."""
    client, app = api
    task_id = client.post("/api/v1/tasks", json={"task_type": "system.ping"}, headers=ALPHA).json()["task_id"]
    wait_done(client, task_id)
    worker = app.store.get(task_id).worker  # type: ignore[union-attr]
    expected = "celery:" if app.settings.executor == "celery" else "local:"
    assert ("celery" in request.node.callspec.id) == (app.settings.executor == "celery")
    assert worker is not None
    assert worker.startswith(expected)


def test_workers_are_listed_alive_with_their_running_task_and_counts(api: tuple[TestClient, Conveyor]) -> None:
    """/api/v1/workers: alive, the task running now, and (on Celery) registered types and processed counts."""
    client, app = api
    wait_done(client, client.post("/api/v1/tasks", json={"task_type": "system.ping"}, headers=ALPHA).json()["task_id"])
    running = client.post(
        "/api/v1/tasks", json={"task_type": "system.sleep", "params": {"seconds": 3, "steps": 30}}, headers=ALPHA
    ).json()["task_id"]
    deadline = time.monotonic() + 30
    while True:
        listing = client.get("/api/v1/workers", headers=OPS).json()
        active = [t for w in listing["data"] for t in w["active"]]
        if running in active:
            break
        assert time.monotonic() < deadline, listing
        time.sleep(0.2)
        if app.settings.executor == "celery":
            app.executor._seen_at = 0.0  # type: ignore[attr-defined]  # ask the workers again, not the cache
    assert listing["executor"] == app.settings.executor
    assert listing["count"] == len(listing["data"]) >= 1
    assert all(w["alive"] for w in listing["data"])
    if app.settings.executor == "celery":
        worker = next(w for w in listing["data"] if running in w["active"])
        assert {"system.ping", "system.sleep"} <= set(worker["registered"])
        assert sum(w["processed"] for w in listing["data"]) >= 1
    else:
        assert listing["stats"]["processed"] >= 1
    assert client.get("/api/v1/workers").status_code == 401  # no key
    client.post(f"/api/v1/tasks/{running}/cancel/", headers=ALPHA)


def test_the_deployment_is_shown_to_operators_only(api: tuple[TestClient, Conveyor]) -> None:
    """Workers (other tenants' running ids), queues and metrics need an operator key; /livez and /health
    answer anyone, without the error texts that may name internal hosts; tracebacks are the operator's."""
    client, _ = api
    for path in ("/api/v1/workers", "/api/v1/queues", "/metrics"):
        assert client.get(path, headers=ALPHA).status_code == 403, path
        assert error(client.get(path, headers=ALPHA))["code"] == "forbidden"
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=OPS).status_code == 200, path
    assert client.get("/livez").json() == {"status": "ok"}
    public = client.get("/health")
    assert public.json()["overall_status"] == "healthy"
    assert "error" not in json.dumps(public.json())

    failed = client.post(
        "/api/v1/tasks",
        json={"task_type": "system.sleep", "params": {"seconds": 0, "steps": 1, "fail": True}},
        headers=ALPHA,
    ).json()["task_id"]
    wait_done(client, failed)
    mine = client.get(f"/api/v1/tasks/{failed}", headers=ALPHA).json()["error"]
    assert mine["message"] == "failed on purpose (fail=true)"
    assert "traceback" not in mine
    assert "traceback" not in client.get(f"/api/v1/tasks/{failed}/result/", headers=ALPHA).json()["error"]
