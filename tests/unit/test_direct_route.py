"""A DirectRoute calls its endpoint with the request as it is; the route keeps its OpenAPI entry and error handling."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient

from conveyor.api.errors import install_error_handlers
from conveyor.api.routing import DirectRoute, SlashRouter
from conveyor.errors import InvalidParams


async def echo(request: Request) -> Response:
    body = await request.body()
    if not body:
        raise InvalidParams.for_field("body", "the body is empty")
    return Response(body[::-1], status_code=202, media_type="text/plain")


def _app() -> FastAPI:
    router = SlashRouter(prefix="/x")
    router.add_api_route(
        "/echo/", echo, methods=["POST"], status_code=202, summary="Echo", route_class_override=DirectRoute
    )
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    return app


def test_the_endpoint_answers_with_and_without_the_slash_and_its_errors_are_the_apps() -> None:
    with TestClient(_app()) as client:
        assert client.post("/x/echo/", content=b"abc").text == "cba"
        assert client.post("/x/echo", content=b"abc").status_code == 202
        refused = client.post("/x/echo/", content=b"")
        assert refused.status_code == 422
        assert refused.json()["error"]["details"][0]["field"] == "body"


def test_the_route_keeps_its_openapi_entry() -> None:
    paths = _app().openapi()["paths"]
    assert paths["/x/echo/"]["post"]["summary"] == "Echo"
    assert "/x/echo" not in paths


@pytest.mark.parametrize("endpoint", [lambda request: None, lambda: None])
def test_an_endpoint_that_is_not_async_def_of_the_request_alone_is_refused(endpoint: Any) -> None:
    with pytest.raises(TypeError, match="async def"):
        DirectRoute("/y", endpoint)


def test_an_endpoint_with_dependencies_is_refused() -> None:
    async def two(request: Request, other: int) -> Response:
        return Response()

    with pytest.raises(TypeError, match="async def two"):
        DirectRoute("/y", two)


def test_a_path_parameter_is_described_as_fastapi_describes_an_argument_of_that_name() -> None:
    async def by_argument(task_id: str) -> dict[str, str]:
        return {"task_id": task_id}

    async def direct(request: Request) -> Response:
        return Response(request.path_params["task_id"])

    router = SlashRouter(prefix="/t")
    router.add_api_route("/{task_id}/a/", by_argument, methods=["GET"])
    router.add_api_route("/{task_id}/b/", direct, methods=["GET"], route_class_override=DirectRoute)
    app = FastAPI()
    app.include_router(router)
    paths = app.openapi()["paths"]
    assert paths["/t/{task_id}/b/"]["get"]["parameters"] == paths["/t/{task_id}/a/"]["get"]["parameters"]
    with TestClient(app) as client:
        assert client.get("/t/abc/b").text == "abc"
