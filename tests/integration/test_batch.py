"""POST /api/v1/tasks/batch: many tasks, one commit, all or nothing, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conveyor import Conveyor
from conveyor.api.main import create_app
from tests.conftest import AppFactory

ALPHA = {"Authorization": "Bearer key-alpha"}
OPS = {"Authorization": "Bearer key-ops"}


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def api(request: pytest.FixtureRequest, make_app: AppFactory, tmp_path: Path) -> Iterator[tuple[TestClient, Conveyor]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'conveyor.db'}"
    else:
        url = request.getfixturevalue("clean_postgres_url")
    app = make_app(
        start=False,
        database_url=url,
        api_keys="key-alpha=alpha",
        operator_keys="key-ops=ops",
        max_unfinished_per_tenant=20,
        max_batch_size=10,
        tenant_rate=5,
        tenant_burst=12,
    )
    with TestClient(create_app(app, scheduler=False)) as client:
        yield client, app


def _all(tenant: str) -> Any:
    from conveyor.stores.base import TaskQuery

    return TaskQuery(tenant=tenant, limit=500)


def test_a_batch_stores_every_task_and_each_runs_once(api: tuple[TestClient, Conveyor]) -> None:
    """202 with one entry per item, in order; every task ends SUCCESS with its own params."""
    client, app = api
    items = [{"task_type": "system.ping", "params": {"payload": f"p{i}"}} for i in range(5)]
    items.append({"task_type": "system.ping", "payload": "flat"})  # the flat body shape, as on a single submit
    r = client.post("/api/v1/tasks/batch", json={"tasks": items}, headers=ALPHA)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["count"] == 6
    ids = [t["task_id"] for t in body["data"]]
    assert len(set(ids)) == 6
    for i, task_id in enumerate(ids):
        record = app.manager.wait(task_id, timeout=30)
        assert record.state.value == "SUCCESS"
        assert record.params["payload"] == (f"p{i}" if i < 5 else "flat")
        assert record.attempts == 1
        assert record.tenant == "alpha"


def test_one_invalid_item_rejects_the_whole_batch_naming_its_index_and_field(
    api: tuple[TestClient, Conveyor],
) -> None:
    """422 invalid_batch: each bad item by index, with the field; nothing of the batch is stored."""
    client, app = api
    items = [
        {"task_type": "system.ping"},
        {"task_type": "system.sleep", "params": {"seconds": "long"}},
        {"task_type": "no.such.type"},
        {"task_type": "system.ping", "priority": 9},  # above a tenant's cap (6)
    ]
    r = client.post("/api/v1/tasks/batch", json={"tasks": items}, headers=ALPHA)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_batch"
    by_index = {d["index"]: d for d in error["details"]}
    assert set(by_index) == {1, 2, 3}
    assert by_index[1]["field"] == "params.seconds" or by_index[1]["field"].endswith("seconds")
    assert by_index[2]["code"] == "unknown_task_type"
    assert by_index[3]["field"] == "priority"
    assert app.store.query(_all("alpha")).total == 0


def test_items_with_one_idempotency_key_are_one_task_and_a_resent_batch_makes_none(
    api: tuple[TestClient, Conveyor],
) -> None:
    """A key names one task within the batch and across batches: sending the batch again stores nothing new."""
    client, app = api
    items = [
        {"task_type": "system.ping", "idempotency_key": "a"},
        {"task_type": "system.ping", "idempotency_key": "b"},
        {"task_type": "system.ping", "idempotency_key": "a"},
    ]
    first = client.post("/api/v1/tasks/batch", json={"tasks": items}, headers=ALPHA).json()["data"]
    assert first[0]["task_id"] == first[2]["task_id"] != first[1]["task_id"]
    again = client.post("/api/v1/tasks/batch", json={"tasks": items}, headers=ALPHA).json()["data"]
    assert [t["task_id"] for t in again] == [t["task_id"] for t in first]
    assert app.store.query(_all("alpha")).total == 2


def test_a_batch_past_the_size_limit_or_the_quota_is_refused_whole(api: tuple[TestClient, Conveyor]) -> None:
    """More items than CONVEYOR_MAX_BATCH_SIZE: 422 on ``tasks``; past the unfinished cap: 429; nothing stored."""
    client, app = api
    r = client.post("/api/v1/tasks/batch", json={"tasks": [{"task_type": "system.ping"}] * 11}, headers=OPS)
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "tasks"
    sleepers = {"tasks": [{"task_type": "system.sleep", "params": {"seconds": 5}}] * 10}
    for _ in range(2):  # the cap is 20 unfinished tasks
        assert client.post("/api/v1/tasks/batch", json=sleepers, headers=OPS).status_code == 202
    r = client.post("/api/v1/tasks/batch", json={"tasks": [{"task_type": "system.ping"}] * 2}, headers=OPS)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "quota_exceeded"
    assert app.store.query(_all("ops")).total == 20


def test_each_item_of_a_batch_counts_against_the_tenants_rate(api: tuple[TestClient, Conveyor]) -> None:
    """With a burst of 12 requests, a batch of 10 passes and the next of 10 is a 429: nothing of it stored."""
    client, app = api
    batch = {"tasks": [{"task_type": "system.ping"}] * 10}
    assert client.post("/api/v1/tasks/batch", json=batch, headers=ALPHA).status_code == 202
    r = client.post("/api/v1/tasks/batch", json=batch, headers=ALPHA)
    assert r.status_code == 429
    assert "Retry-After" in r.headers
    assert app.store.query(_all("alpha")).total == 10


def test_the_batch_route_is_in_the_openapi_document(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    doc = client.get("/openapi.json").json()
    post = doc["paths"]["/api/v1/tasks/batch"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert "tasks" in schema["properties"]
    assert "202" in post["responses"]
