"""Internal task types and the operator role: a tenant cannot run maintenance that acts on everyone.

Found by attacking Conveyor as a hostile tenant: ``documents.cleanup`` with a
retention of 1e-9 days, submitted by tenant B over ``POST /api/v1/tasks``,
deleted tenant A's documents. Internal types now answer a tenant exactly as
an unknown type does, are not listed, and stay open to the scheduler, to
Python code and to operator keys.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from conveyor import Conveyor
from conveyor.api.main import create_app
from tests.conftest import AppFactory

ALPHA = {"Authorization": "Bearer ka"}
BETA = {"Authorization": "Bearer kb"}
OPERATOR = {"Authorization": "Bearer ops-key"}
HOSTILE = {"task_type": "documents.cleanup", "params": {"retention_days": 1e-9}}


@pytest.fixture
def api(make_app: AppFactory) -> Iterator[tuple[TestClient, Conveyor]]:
    app = make_app(
        start=False,
        api_keys="ka=alpha,kb=beta",
        operator_keys="ops-key=ops",
        workloads=["system", "documents"],
    )
    with TestClient(create_app(app, scheduler=False)) as client:
        yield client, app


def test_a_tenant_cannot_run_another_tenants_cleanup(api: tuple[TestClient, Conveyor]) -> None:
    """Tenant B's cleanup is refused as unknown, and tenant A's document is still there."""
    client, _ = api
    up = client.post("/api/documents/upload", files={"file": ("a.txt", b"alpha words " * 50)}, headers=ALPHA)
    assert up.status_code == 202, up.text
    document_id = up.json()["document_id"]

    refused = client.post("/api/v1/tasks", json=HOSTILE, headers=BETA)
    unknown = client.post("/api/v1/tasks", json={"task_type": "no.such.type", "params": {}}, headers=BETA)
    assert refused.status_code == unknown.status_code == 400
    assert refused.json()["error"]["code"] == unknown.json()["error"]["code"] == "unknown_task_type"
    assert "documents.cleanup" not in refused.json()["error"]["details"]["known_types"]
    assert (
        client.post("/api/v1/tasks/submit/", json={"task_type": "documents.cleanup"}, headers=BETA).status_code == 400
    )
    assert client.get(f"/api/documents/{document_id}", headers=ALPHA).status_code == 200


def test_internal_types_are_not_listed_for_tenants_but_are_for_operators(api: tuple[TestClient, Conveyor]) -> None:
    client, _ = api
    tenant_view = {t["name"] for t in client.get("/api/v1/task-types", headers=BETA).json()["data"]}
    operator_view = {t["name"]: t for t in client.get("/api/v1/task-types", headers=OPERATOR).json()["data"]}
    assert "documents.cleanup" not in tenant_view
    assert "maintenance.purge_expired" not in tenant_view
    assert "system.ping" in tenant_view
    assert operator_view["documents.cleanup"]["visibility"] == "internal"
    assert client.get("/api/v1/task-types/documents.cleanup", headers=BETA).status_code == 400
    assert client.get("/api/v1/task-types/documents.cleanup", headers=OPERATOR).status_code == 200


def test_an_operator_may_run_an_internal_type(api: tuple[TestClient, Conveyor]) -> None:
    """The operator's key names its own tenant; the task is accepted and ends."""
    client, app = api
    r = client.post("/api/v1/tasks", json={"task_type": "maintenance.purge_expired", "params": {}}, headers=OPERATOR)
    assert r.status_code == 202, r.text
    record = app.manager.wait(r.json()["task_id"], timeout=20)
    assert record.tenant == "ops"
    assert record.state.value == "SUCCESS"


def test_an_alias_names_its_task_type_and_cannot_shadow_another() -> None:
    """A seed's own task name works as the registered type's alias; the record keeps the canonical name."""
    from conveyor.errors import ConfigurationError
    from conveyor.registry import Registry

    registry = Registry()

    @registry.task("demo.double", aliases=("double",))
    def double(ctx: object, n: int) -> int:
        return 2 * n

    assert registry.get("double").name == "demo.double"
    assert "double" in registry
    assert double.name == "demo.double"
    assert registry.get_public("double").bind((4,), {}) == {"n": 4}
    with pytest.raises(ConfigurationError, match="alias"):

        @registry.task("demo.other", aliases=("double",))
        def other(ctx: object) -> None: ...
