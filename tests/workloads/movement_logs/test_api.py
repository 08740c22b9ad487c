"""Seed 003's /api/logs routes over HTTP: the client flow, DRF pages, queue status, health, refusals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conveyor import Conveyor
from conveyor.api.main import create_app
from tests.conftest import AppFactory
from tests.workloads.movement_logs.conftest import SEED_BODY, empty_log_tables, redis_url

ALPHA = {"Authorization": "Bearer ka"}
BETA = {"Authorization": "Bearer kb"}
OPS = {"Authorization": "Bearer kop"}
HEALTH_KEYS = {"redis", "celery", "database", "overall_status"}


def serve(make_app: AppFactory, tmp_path: Path, database: str, queue: str) -> Conveyor:
    wl: dict[str, Any] = {"max_list": 50}
    if queue == "redis":
        wl["redis_url"] = redis_url()
    database_url = f"sqlite:///{tmp_path / 'conveyor.db'}" if database == "sqlite" else database
    if database_url.startswith("postgresql"):
        empty_log_tables(database_url)
    return make_app(
        start=False,
        database_url=database_url,
        concurrency=1,
        api_keys="ka=alpha,kb=beta",
        operator_keys="kop=ops",
        workloads=["system", "movement_logs"],
        workload_settings={"movement_logs": wl},
    )


@pytest.fixture(
    params=[
        "sqlite+sql-queue",
        pytest.param("postgres+sql-queue", marks=pytest.mark.postgres),
        pytest.param("postgres+redis-queue", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ]
)
def logs(request: pytest.FixtureRequest, make_app: AppFactory, tmp_path: Path) -> Iterator[tuple[TestClient, Conveyor]]:
    """The embedded default (SQLite, the queue table), PostgreSQL with the queue table, PostgreSQL with Redis."""
    database, queue = request.param.split("+")
    if database == "postgres":
        database = request.getfixturevalue("clean_postgres_url")
    app = serve(make_app, tmp_path, database, queue.removesuffix("-queue"))
    with TestClient(create_app(app, scheduler=False)) as client:
        yield client, app


@pytest.fixture
def embedded(make_app: AppFactory, tmp_path: Path) -> Iterator[tuple[TestClient, Conveyor]]:
    """The embedded default only: for checks that do not depend on where the queue is."""
    app = serve(make_app, tmp_path, "sqlite", "sql")
    with TestClient(create_app(app, scheduler=False)) as client:
        yield client, app


def wait_task(client: TestClient, task_id: str, headers: dict[str, str] = ALPHA, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        task = client.get(f"/api/v1/tasks/{task_id}", headers=headers).json()
        if task["status"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            return task
        assert time.monotonic() < deadline, task
        time.sleep(0.05)


def process(client: TestClient, headers: dict[str, str] = ALPHA, **query: Any) -> Any:
    r = client.post("/api/logs/process/", headers=headers, params=query)
    assert r.status_code == 202, r.text
    task = wait_task(client, r.json()["task_id"], headers)
    assert task["status"] == "SUCCESS", task
    return task["result"]


def queue_length(client: TestClient) -> int:
    length: int = client.get("/api/logs/queue-status/", headers=OPS).json()["queue_length"]
    return length


def test_the_seed_client_posts_a_log_processes_and_finds_it_with_every_field(
    logs: tuple[TestClient, Conveyor],
) -> None:
    """requests.post(add-movement/, json=data) → 202; POST process/ → a task; GET movements/ holds the log."""
    client, _app = logs
    r = client.post("/api/logs/add-movement/", json=SEED_BODY, headers=ALPHA)
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "queued"
    assert body["queue_length"] == 1
    assert body["event_id"]
    result = process(client)
    assert (result["moved"], result["duplicates"], result["queue_length"]) == (1, 0, 0)
    page = client.get("/api/logs/movements/", headers=ALPHA).json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert (page["count"], page["next"], page["previous"]) == (1, None, None)
    log = page["results"][0]
    assert {k: log[k] for k in SEED_BODY} == SEED_BODY
    assert log["id"] == log["event_id"] == body["event_id"]
    assert log["timestamp"].endswith("Z")
    assert log["stored_at"] >= log["received_at"]


def test_every_route_answers_with_and_without_the_trailing_slash(embedded: tuple[TestClient, Conveyor]) -> None:
    """The seed writes /add-movement/; a client that drops the slash is served the same, with no redirect."""
    client, _app = embedded
    assert client.post("/api/logs/add-movement", json=SEED_BODY, headers=ALPHA).status_code == 202
    for path in ("movements", "queue-status", "health", "batches"):
        for suffix in ("", "/"):
            r = client.get(f"/api/logs/{path}{suffix}", headers=OPS, follow_redirects=False)
            assert r.status_code == 200, (path, suffix, r.text)
    assert client.post("/api/logs/process", headers=ALPHA, follow_redirects=False).status_code == 202
    assert client.post("/api/logs/clear-queue", headers=OPS, follow_redirects=False).status_code == 200


def test_a_list_is_queued_whole_and_a_bad_item_queues_none_of_it(logs: tuple[TestClient, Conveyor]) -> None:
    """Ten logs in one request → ten ids; a list with one bad bbox → 422 naming it, the queue unchanged."""
    client, _app = logs
    items = [{**SEED_BODY, "track_id": i} for i in range(10)]
    r = client.post("/api/logs/add-movement/", json=items, headers=ALPHA)
    assert r.status_code == 202
    assert (r.json()["count"], len(set(r.json()["event_ids"])), r.json()["queue_length"]) == (10, 10, 10)
    bad = [*items, {**SEED_BODY, "bbox": [10, 10, 5, 20]}]
    r = client.post("/api/logs/add-movement/", json=bad, headers=ALPHA)
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "10.bbox"
    assert queue_length(client) == 10
    r = client.post("/api/logs/add-movement/", json=[SEED_BODY] * 51, headers=ALPHA)
    assert r.status_code == 413
    assert r.json()["error"]["details"]["max_list"] == 50
    assert queue_length(client) == 10
    assert process(client)["moved"] == 10


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, "body"),
        (b"", 422, "body"),
        (b'"a string"', 422, "body"),
        (b"[]", 422, "body"),
        (b'{"user_id": "U", "track_id": 1, "bbox": [1, 2, 3], "state": "w", "store": "S"}', 422, "bbox"),
        (b'{"user_id": "U", "track_id": "x", "bbox": [1, 2, 3, 4], "state": "w", "store": "S"}', 422, "track_id"),
        (b'{"track_id": 1, "bbox": [1, 2, 3, 4], "state": "w", "store": "S"}', 422, "user_id"),
        (b'{"user_id": "U", "track_id": 1, "bbox": [1, 2, 3, 4], "state": "w", "store": ""}', 422, "store"),
        (b'{"user_id": "U", "track_id": 1, "bbox": [1, 2, 3, 4], "state": "w", "store": "S", "x": 1}', 422, "x"),
        (b"\xff\xfe", 400, "body"),
    ],
)
def test_bad_bodies_are_4xx_json_naming_the_problem_and_queue_nothing(
    embedded: tuple[TestClient, Conveyor], body: bytes, status: int, field: str
) -> None:
    """Non-JSON, empty, wrong shape, each malformed field: a JSON error naming it; nothing queued."""
    client, _app = embedded
    r = client.post("/api/logs/add-movement/", content=body, headers={**ALPHA, "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"]
    assert field in [d["field"] for d in error["details"]], error
    assert queue_length(client) == 0


def test_movements_come_in_drf_pages_newest_first(logs: tuple[TestClient, Conveyor]) -> None:
    """25 logs, page_size=10: count, next and previous links as DRF writes them, a page past the end is 404."""
    client, _app = logs
    t0 = 1_796_000_000
    items = [{**SEED_BODY, "track_id": i, "timestamp": t0 + i} for i in range(25)]
    client.post("/api/logs/add-movement/", json=items[:20], headers=ALPHA)
    client.post("/api/logs/add-movement/", json=items[20:], headers=ALPHA)
    process(client)
    first = client.get("/api/logs/movements/", params={"page_size": 10}, headers=ALPHA).json()
    assert first["count"] == 25
    assert first["previous"] is None
    assert [r["track_id"] for r in first["results"]] == list(range(24, 14, -1))
    assert first["next"].endswith("/api/logs/movements/?page_size=10&page=2")
    second = client.get(first["next"], headers=ALPHA).json()
    assert second["previous"].endswith("/api/logs/movements/?page_size=10")
    third = client.get("/api/logs/movements/", params={"page_size": 10, "page": 3}, headers=ALPHA).json()
    assert [r["track_id"] for r in third["results"]] == [4, 3, 2, 1, 0]
    assert third["next"] is None
    assert third["previous"].endswith("page=2")
    past = client.get("/api/logs/movements/", params={"page_size": 10, "page": 4}, headers=ALPHA)
    assert past.status_code == 404
    assert past.json()["error"]["details"][0]["field"] == "page"
    for query in ({"page": 0}, {"page_size": 0}, {"page_size": 1001}, {"track_id": -1}, {"since": "yesterday"}):
        r = client.get("/api/logs/movements/", params=query, headers=ALPHA)
        assert r.status_code == 422, (query, r.text)
        assert r.json()["error"]["details"][0]["field"] == next(iter(query))


def test_movements_filter_by_user_store_state_track_and_time(embedded: tuple[TestClient, Conveyor]) -> None:
    """Each filter narrows the count; since/until take ISO-8601 or epoch seconds."""
    client, _app = embedded
    t0 = 1_796_000_000
    items = [
        {
            "user_id": f"U{i % 3}",
            "track_id": i,
            "bbox": [0, 0, 10, 10],
            "state": ("walking", "standing")[i % 2],
            "store": ("Store A", "Store B")[i % 2],
            "timestamp": t0 + i,
        }
        for i in range(12)
    ]
    client.post("/api/logs/add-movement/", json=items, headers=ALPHA)
    process(client)

    def count(**query: Any) -> int:
        r = client.get("/api/logs/movements/", params=query, headers=ALPHA)
        assert r.status_code == 200, r.text
        n: int = r.json()["count"]
        return n

    assert count() == 12
    assert count(user_id="U0") == 4
    assert count(store="Store B") == 6
    assert count(state="walking") == 6
    assert count(track_id=7) == 1
    assert count(user_id="U1", state="standing") == 2
    assert count(since=t0 + 10) == 2
    assert count(until=t0 + 2) == 2
    assert count(since="2026-11-30T00:53:23Z", until="2026-11-30T01:53:26+01:00") == 3


def test_another_tenant_sees_none_of_a_tenants_logs(embedded: tuple[TestClient, Conveyor]) -> None:
    """Logs carry their poster's tenant: beta's list is empty after alpha's log is stored."""
    client, _app = embedded
    client.post("/api/logs/add-movement/", json=SEED_BODY, headers=ALPHA)
    process(client)
    assert client.get("/api/logs/movements/", headers=ALPHA).json()["count"] == 1
    assert client.get("/api/logs/movements/", headers=BETA).json()["count"] == 0
    assert client.get("/api/logs/movements/").status_code == 401


def test_two_tenants_posting_the_same_event_id_both_are_stored_and_each_sees_only_its_own(
    logs: tuple[TestClient, Conveyor],
) -> None:
    """A client event id is unique per tenant: alpha's "cam-1:7" and beta's are two logs; retries stay one each."""
    client, _app = logs
    mine = {**SEED_BODY, "event_id": "cam-1:7", "store": "Store A"}
    theirs = {**SEED_BODY, "event_id": "cam-1:7", "store": "Store B", "track_id": 2}
    for body, headers in ((mine, ALPHA), (theirs, BETA), (mine, ALPHA), (theirs, BETA)):
        r = client.post("/api/logs/add-movement/", json=body, headers=headers)
        assert (r.status_code, r.json()["event_id"]) == (202, "cam-1:7"), r.text
    result = process(client)
    assert (result["moved"], result["duplicates"]) == (2, 2)
    for headers, store, track_id in ((ALPHA, "Store A", 1), (BETA, "Store B", 2)):
        page = client.get("/api/logs/movements/", headers=headers).json()
        assert page["count"] == 1
        assert [(r["event_id"], r["store"], r["track_id"]) for r in page["results"]] == [("cam-1:7", store, track_id)]
        assert (
            client.get(
                "/api/logs/movements/",
                headers=headers,
                params={"store": "Store A" if store == "Store B" else "Store B"},
            ).json()["count"]
            == 0
        )


def test_queue_status_reports_length_age_processing_and_the_last_batch(logs: tuple[TestClient, Conveyor]) -> None:
    """Before a batch: the length and the oldest age; after: an empty queue and the batch's figures."""
    client, _app = logs
    client.post("/api/logs/add-movement/", json=[SEED_BODY] * 3, headers=ALPHA)
    status = client.get("/api/logs/queue-status/", headers=OPS).json()
    assert status["queue_length"] == 3
    assert status["processing"] == 0
    assert status["queue_name"] == "movement_logs"
    assert status["oldest_age_seconds"] >= 0
    assert status["last_batch"] is None
    assert status["batch_size"] == 10_000
    result = process(client)
    status = client.get("/api/logs/queue-status/", headers=OPS).json()
    assert status["queue_length"] == 0
    assert status["oldest_age_seconds"] is None
    last = status["last_batch"]
    assert (last["moved"], last["claimed"], last["task_id"]) == (3, 3, result["batch_ids"] and last["task_id"])
    assert last["duration_ms"] >= 0
    history = client.get("/api/logs/batches/", headers=OPS).json()
    assert history["count"] == 1
    assert history["results"][0]["id"] == result["batch_ids"][0]


def test_the_deployments_queue_figures_are_for_operators(embedded: tuple[TestClient, Conveyor]) -> None:
    """queue-status and batches describe every tenant's traffic: a tenant's key is 403 there, as on /api/v1/queues."""
    client, _app = embedded
    for path in ("/api/logs/queue-status/", "/api/logs/batches/"):
        r = client.get(path, headers=ALPHA)
        assert r.status_code == 403, path
        assert r.json()["error"]["code"] == "forbidden"
        assert client.get(path, headers=OPS).status_code == 200


def test_clear_queue_is_an_operators_action_that_says_how_many_it_dropped(
    embedded: tuple[TestClient, Conveyor],
) -> None:
    """A tenant's key is 403 and drops nothing; an operator's drops the queue and counts it."""
    client, _app = embedded
    client.post("/api/logs/add-movement/", json=[SEED_BODY] * 4, headers=ALPHA)
    r = client.post("/api/logs/clear-queue/", headers=ALPHA)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    assert queue_length(client) == 4
    r = client.post("/api/logs/clear-queue/", headers=OPS)
    assert r.status_code == 200
    assert r.json()["cleared"] == 4
    assert queue_length(client) == 0


def test_health_has_exactly_the_seeds_shape(logs: tuple[TestClient, Conveyor]) -> None:
    """{"redis", "celery", "database", "overall_status"}, all true and healthy on a working deployment."""
    client, _app = logs
    r = client.get("/api/logs/health/")
    assert r.status_code == 200
    assert r.json() == {"redis": True, "celery": True, "database": True, "overall_status": "healthy"}


def test_test_celery_reports_a_worker_answering_and_the_round_trip(embedded: tuple[TestClient, Conveyor]) -> None:
    """Embedded mode: the local pool answers the ping; the time and the worker are reported."""
    client, _app = embedded
    r = client.get("/api/logs/test-celery/", headers=ALPHA)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["celery"] is True
    assert body["status"] == "ok"
    assert body["executor"] == "local"
    assert body["round_trip_ms"] > 0
    assert body["worker"]["pid"]


def test_the_batch_task_is_internal_to_tenants_but_runs_from_process(embedded: tuple[TestClient, Conveyor]) -> None:
    """A tenant cannot submit logs.process_batch through /api/v1/tasks; /process/ runs it and its status is theirs."""
    client, _app = embedded
    r = client.post("/api/v1/tasks", json={"type": "logs.process_batch", "params": {}}, headers=ALPHA)
    assert r.status_code in (400, 404), r.text
    r = client.post("/api/logs/process/", headers=ALPHA, params={"max_batches": 0})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "max_batches"


def test_metrics_carry_the_queue_length_and_the_batch_figures(embedded: tuple[TestClient, Conveyor]) -> None:
    """/metrics: the queue's length while logs wait, then the moved total after a batch."""
    client, _app = embedded
    client.post("/api/logs/add-movement/", json=[SEED_BODY] * 2, headers=ALPHA)
    text = client.get("/metrics", headers=OPS).text
    assert "conveyor_movement_logs_queue_length{backend=" in text
    assert any(
        line.startswith("conveyor_movement_logs_queue_length") and line.endswith(" 2.0") for line in text.splitlines()
    )
    process(client)
    text = client.get("/metrics", headers=OPS).text
    assert "conveyor_movement_logs_moved_total 2.0" in text.splitlines()


def test_the_dashboard_page_is_listed_and_served(embedded: tuple[TestClient, Conveyor]) -> None:
    """GET /api/v1/workloads names the page; /workloads/movement_logs/page.js is the ES module with nav and routes."""
    client, _app = embedded
    listed = client.get("/api/v1/workloads", headers=ALPHA)
    assert listed.status_code == 200
    assert "movement_logs" in listed.text
    page = client.get("/workloads/movement_logs/page.js")
    assert page.status_code == 200
    assert "export const nav" in page.text
    assert "export const routes" in page.text
    assert "/api/logs/queue-status/" in page.text


def test_the_scheduled_job_submits_the_batch_every_interval_and_it_drains_the_queue(
    embedded: tuple[TestClient, Conveyor],
) -> None:
    """The workload's periodic job is logs.process_batch every INTERVAL s; one slot fired moves what waits."""
    from conveyor.scheduler import submit_slot
    from conveyor.workloads.movement_logs import workload

    client, app = embedded
    (job,) = workload.periodic_jobs
    assert (job.task_type, job.every, job.params) == ("logs.process_batch", 10.0, {"max_batches": 20})
    client.post("/api/logs/add-movement/", json=[SEED_BODY] * 7, headers=ALPHA)
    record = submit_slot(app.manager, job, job.slot_at_or_before(time.time()))
    assert record is not None
    done = app.manager.wait(record.id, timeout=30)
    assert done.state.value == "SUCCESS"
    assert done.result["moved"] == 7
    assert queue_length(client) == 0
