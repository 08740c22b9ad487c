"""One tenant cannot exhaust everyone: a request rate, a cap on open streams, a priority cap.

Each answer past a limit is a 429 with ``Retry-After`` (or a 422 for the
priority) that names the limit; another tenant and operators go on unhindered.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from conveyor import Conveyor
from conveyor.api.limits import TenantLimits
from conveyor.api.main import create_app
from conveyor.errors import RateLimited
from tests.conftest import AppFactory

ALPHA = {"Authorization": "Bearer ka"}
BETA = {"Authorization": "Bearer kb"}
OPS = {"Authorization": "Bearer ko"}


@pytest.fixture
def api(make_app: AppFactory) -> Iterator[tuple[TestClient, Conveyor]]:
    app = make_app(
        start=False,
        database_url="memory://",
        api_keys="ka=alpha,kb=beta",
        operator_keys="ko=ops",
        tenant_rate=5,
        tenant_burst=10,
        tenant_max_streams=2,
        workloads=["system"],
    )
    with TestClient(create_app(app, scheduler=False)) as client:
        yield client, app


def test_a_tenant_past_its_rate_gets_429_with_retry_after_and_others_do_not(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    answers = [client.get("/api/v1/tasks", headers=ALPHA).status_code for _ in range(12)]
    assert answers[:10] == [200] * 10
    assert 429 in answers[10:]
    refused = client.get("/api/v1/tasks", headers=ALPHA)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert client.get("/api/v1/tasks", headers=BETA).status_code == 200
    assert all(client.get("/api/v1/tasks", headers=OPS).status_code == 200 for _ in range(20))


def test_the_bucket_refills_at_the_rate() -> None:
    limits = TenantLimits(rate=2, burst=2, max_streams=0)
    limits.hit("t", now=0.0)
    limits.hit("t", now=0.0)
    with pytest.raises(RateLimited) as info:
        limits.hit("t", now=0.1)
    assert info.value.retry_after == pytest.approx(0.4, abs=0.01)
    limits.hit("t", now=0.6)  # half a second: one more request


def test_open_streams_per_tenant_are_capped_and_freed_when_they_end(api: tuple[TestClient, Conveyor]) -> None:
    """A slot is taken before the stream answers, so the third stream is a 429, not a stream that ends."""
    client, app = api
    limits: TenantLimits = client.app.state.limits  # type: ignore[attr-defined]
    task_id = client.post(
        "/api/v1/tasks", json={"task_type": "system.sleep", "params": {"seconds": 0, "steps": 1}}, headers=ALPHA
    ).json()["task_id"]
    first, second = limits.open_stream("alpha"), limits.open_stream("alpha")
    refused = client.get(f"/api/v1/tasks/{task_id}/events", headers=ALPHA)
    assert refused.status_code == 429
    assert "live streams" in refused.json()["error"]["message"]
    assert refused.headers["retry-after"] == "5"
    assert client.get(f"/api/v1/events?ids={task_id}", headers=ALPHA).status_code == 429
    first()
    second()
    app.manager.wait(task_id, timeout=10)
    with client.stream("GET", f"/api/v1/tasks/{task_id}/events", headers=ALPHA) as stream:
        assert stream.status_code == 200
        assert any(line.startswith("event: end") for line in stream.iter_lines())
    assert limits.streams_open("alpha") == 0  # the ended stream gave its slot back


def test_a_tenant_may_not_jump_the_queue_with_the_top_priorities(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    too_high = client.post("/api/v1/tasks", json={"task_type": "system.ping", "priority": 9}, headers=ALPHA)
    assert too_high.status_code == 422
    assert too_high.json()["error"]["details"][0]["field"] == "priority"
    assert (
        client.post("/api/v1/tasks", json={"task_type": "system.ping", "priority": 6}, headers=ALPHA).status_code == 202
    )
    assert (
        client.post("/api/v1/tasks", json={"task_type": "system.ping", "priority": 9}, headers=OPS).status_code == 202
    )
