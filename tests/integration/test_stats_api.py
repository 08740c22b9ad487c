"""/api/v1/stats and /api/v1/session: what the dashboard's charts and sign-in read."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from conveyor import Conveyor, Status, TaskRecord
from conveyor.api.main import create_app
from conveyor.records import now
from tests.conftest import AppFactory

ALPHA = {"Authorization": "Bearer key-alpha"}
BETA = {"X-API-Key": "key-beta"}


@pytest.fixture
def api(make_app: AppFactory) -> Iterator[tuple[TestClient, Conveyor]]:
    app = make_app(start=False, api_keys="key-alpha=alpha,key-beta=beta")
    with TestClient(create_app(app, scheduler=False)) as client:
        yield client, app


def finished(tenant: str, state: Status, at: float) -> TaskRecord:
    return TaskRecord(id=str(uuid.uuid4()), type="system.ping", tenant=tenant, state=state, finished_at=at)


def test_stats_count_the_callers_finished_tasks_per_bucket(api: tuple[TestClient, Conveyor]) -> None:
    """Every bucket of the window comes back, only the caller's finishes are counted, and a failure rate is given."""
    client, app = api
    t = now()
    app.store.insert(
        [
            finished("alpha", Status.SUCCESS, t - 1),
            finished("alpha", Status.SUCCESS, t - 2),
            finished("alpha", Status.FAILURE, t - 3),
            finished("alpha", Status.CANCELLED, t - 7200),  # outside the window
            finished("beta", Status.FAILURE, t - 1),
        ]
    )
    body = client.get("/api/v1/stats?window=3600&bucket=60", headers=ALPHA).json()
    assert len(body["data"]) == 60
    assert all(b["timestamp"] % 60 == 0 for b in body["data"])
    assert body["totals"] == {"success": 2, "failure": 1, "cancelled": 0, "total": 3}
    assert body["failure_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert sum(b["total"] for b in body["data"][-2:]) == 3
    other = client.get("/api/v1/stats", headers=BETA).json()
    assert other["totals"]["failure"] == 1
    assert other["totals"]["success"] == 0


def test_stats_answer_422_for_a_bucket_that_does_not_fit_the_window(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    too_long = client.get("/api/v1/stats?window=600&bucket=3600", headers=ALPHA)
    assert too_long.status_code == 422
    assert too_long.json()["error"]["details"][0]["field"] == "bucket"
    too_many = client.get("/api/v1/stats?window=86400&bucket=1", headers=ALPHA)
    assert too_many.status_code == 422
    assert client.get("/api/v1/stats").status_code == 401


def test_the_session_says_whether_a_key_is_needed_and_whose_it_is(api: tuple[TestClient, Conveyor]) -> None:
    """The sign-in check never answers 401: a wrong key is ``authenticated: false``."""
    client, _ = api
    anonymous = client.get("/api/v1/session").json()
    assert anonymous["auth_required"] is True
    assert anonymous["authenticated"] is False
    assert anonymous["workloads"] == []
    wrong = client.get("/api/v1/session", headers={"X-API-Key": "nope"})
    assert wrong.status_code == 200
    assert wrong.json()["authenticated"] is False
    mine = client.get("/api/v1/session", headers=ALPHA).json()
    assert (mine["authenticated"], mine["tenant"]) == (True, "alpha")
    assert "system" in mine["workloads"]
    assert mine["operator"] is False
