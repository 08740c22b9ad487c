"""The route index sends a request straight to the router that answers its path, and answers exactly as the app did."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, Match, Route, Router

from conveyor import Conveyor
from conveyor.api import route_index
from conveyor.api.main import create_app
from conveyor.api.route_index import RouteIndex, is_included_router
from tests.conftest import AppFactory

KEYS = "key-alpha=alpha,key-beta=beta"
ALPHA = {"Authorization": "Bearer key-alpha"}
BETA = {"Authorization": "Bearer key-beta"}


def _index(app: FastAPI) -> RouteIndex:
    first = app.router.routes[0]
    assert isinstance(first, RouteIndex)
    return first


@pytest.fixture
def conveyor(make_app: AppFactory) -> Conveyor:
    return make_app(start=False, api_keys=KEYS, workloads=["system", "movement_logs"])


@pytest.fixture
def clients(conveyor: Conveyor) -> Iterator[tuple[TestClient, TestClient]]:
    """The same Conveyor behind two apps: one with the index, one with it taken out."""
    indexed = create_app(conveyor, scheduler=False)
    plain = create_app(conveyor, manage=False)
    plain.router.routes.remove(_index(plain))
    with TestClient(indexed) as a, TestClient(plain) as b:
        yield a, b


def test_every_kind_of_answer_is_the_same_with_and_without_the_index(
    clients: tuple[TestClient, TestClient],
) -> None:
    """Twice each (the second time from the index): routes with and without a slash or a path parameter,
    a wrong method (405 and its Allow), an unknown API path (JSON 404), another tenant's task (404),
    the dashboard's files and the OpenAPI document."""
    indexed, plain = clients
    task_id = indexed.post("/api/v1/tasks", json={"task_type": "system.ping"}, headers=ALPHA).json()["task_id"]
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/health", {}),
        ("GET", "/api/v1/task-types", {"headers": ALPHA}),
        ("GET", f"/api/v1/tasks/{task_id}", {"headers": ALPHA}),
        ("GET", f"/api/v1/tasks/{task_id}/status", {"headers": ALPHA}),
        ("GET", f"/api/tasks/{task_id}/status", {"headers": ALPHA}),
        ("GET", f"/api/v1/tasks/{task_id}", {"headers": BETA}),
        ("DELETE", "/api/v1/task-types", {"headers": ALPHA}),
        ("PUT", "/api/logs/add-movement/", {"headers": ALPHA}),
        ("GET", "/api/logs/health/", {}),
        ("GET", "/api/logs/health", {}),
        ("GET", "/api/logs/queue-status/", {"headers": ALPHA}),
        ("GET", "/api/no/such/route", {"headers": ALPHA}),
        ("GET", "/", {}),
        ("GET", "/openapi.json", {}),
    ]
    for _ in range(2):
        for method, path, kwargs in requests:
            a = indexed.request(method, path, **kwargs)
            b = plain.request(method, path, **kwargs)
            answer = (a.status_code, a.headers.get("allow"), a.content)
            assert answer == (b.status_code, b.headers.get("allow"), b.content), (method, path)
    answered = indexed.post(
        "/api/logs/add-movement/",
        json={"user_id": "U1", "track_id": 1, "bbox": [1, 1, 2, 2], "state": "walking", "store": "Store A"},
        headers=ALPHA,
    )
    assert answered.status_code == 202
    assert answered.json()["status"] == "queued"


def test_a_remembered_path_is_matched_against_its_own_router_only(conveyor: Conveyor) -> None:
    """The first request finds the movement logs router after the core's; the next ones go straight to it."""
    app = create_app(conveyor, scheduler=False)
    tried: list[BaseRoute] = []

    def counting(route: BaseRoute) -> Callable[[Any], tuple[Match, Any]]:
        original = route.matches

        def matches(scope: Any) -> tuple[Match, Any]:
            tried.append(route)
            return original(scope)

        return matches

    included = [r for r in app.router.routes if is_included_router(r)]
    assert len(included) > 5
    for route in included:
        route.matches = counting(route)  # type: ignore[method-assign]
    with TestClient(app) as client:
        assert client.get("/api/logs/health/").status_code == 200
        first = list(tried)
        assert len(first) > 5, "the logs router comes after the core's"
        tried.clear()
        for _ in range(3):
            assert client.get("/api/logs/health/").status_code == 200
        assert tried == [first[-1]] * 3


def test_the_index_is_bounded_and_keeps_the_paths_in_use(conveyor: Conveyor) -> None:
    """Paths that carry a task id are as many as the tasks: the least recently used leave first."""
    app = create_app(conveyor, scheduler=False)
    index = _index(app)
    index.size = 4
    with TestClient(app) as client:
        for i in range(10):
            assert client.get("/health").status_code == 200
            assert client.get(f"/api/v1/tasks/t-{i}/status", headers=ALPHA).status_code == 404
    assert len(index._known) == 4
    assert ("http", "GET", "", "/health") in index._known


def test_nothing_is_installed_where_no_router_is_kept_whole() -> None:
    """A FastAPI that flattens included routers into plain routes gains nothing from an index."""
    router = Router(routes=[Route("/a", lambda request: None)])
    assert route_index.install(router) is None
    assert not any(isinstance(r, RouteIndex) for r in router.routes)
