"""Routing helpers: a router that answers with and without the trailing slash, and a direct route.

Seed clients call ``/status/`` (Django style) and newer ones ``/status``.
Starlette's redirect_slashes answers the other form with a 307, which
``curl -X POST`` does not follow; registering both paths answers both.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

__all__ = ["DirectRoute", "SlashRouter", "direct"]


def _path_parameter(name: str) -> dict[str, Any]:
    title = name.replace("_", " ").title()
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "title": title}}


class SlashRouter(APIRouter):
    def add_api_route(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().add_api_route(path, endpoint, **kwargs)
        other = path[:-1] if path.endswith("/") else path + "/"
        if other and other != path and (self.prefix + other) not in ("", "/"):
            kwargs = {**kwargs, "include_in_schema": False}
            kwargs.pop("operation_id", None)
            super().add_api_route(other, endpoint, **kwargs)


class DirectRoute(APIRoute):
    """A route whose endpoint takes the ``Request`` and returns a ``Response``, called as it is.

    For the hot producer routes that read and check their own body: FastAPI's
    request handler would still solve an empty set of dependencies, look for
    a body to parse and a response model to serialise on every request (about
    a tenth of a small request's time). The route keeps everything else of an
    ``APIRoute``: its OpenAPI entry (``openapi_extra`` describes the body), its
    exception handlers, its name for ``url_path_for``. Pass it as
    ``route_class_override`` to ``add_api_route``.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        params = list(inspect.signature(endpoint).parameters)
        if not inspect.iscoroutinefunction(endpoint) or len(params) != 1:
            raise TypeError(f"a DirectRoute's endpoint is async def {endpoint.__name__}(request) -> Response")
        # The endpoint reads its path parameters from ``request.path_params``; the schema names
        # them as FastAPI would have from a ``task_id: str`` argument.
        extra = dict(kwargs.get("openapi_extra") or {})
        declared = {p.get("name") for p in extra.get("parameters", [])}
        found = [name for name in re.findall(r"{(\w+)(?::\w+)?}", path) if name not in declared]
        if found:
            extra["parameters"] = [*extra.get("parameters", []), *map(_path_parameter, found)]
            kwargs["openapi_extra"] = extra
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return handler


DirectEndpoint = Callable[[Request], Coroutine[Any, Any, Response]]


def direct(
    router: APIRouter, path: str, *, methods: list[str], **kwargs: Any
) -> Callable[[DirectEndpoint], DirectEndpoint]:
    """``@router.get(path, ...)`` for an endpoint served as a ``DirectRoute``."""

    def register(endpoint: DirectEndpoint) -> DirectEndpoint:
        router.add_api_route(path, endpoint, methods=methods, route_class_override=DirectRoute, **kwargs)
        return endpoint

    return register
