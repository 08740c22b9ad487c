"""Remember which of the app's routers answers a path, so a request is not matched against all of them.

FastAPI keeps each included router whole and tries them in order: a request
for a workload's route (``/api/logs/add-movement/``) was matched against the
core's eight routers first, about fifty path regexes, before its own — a
third of a small request's time. ``RouteIndex`` goes first in the app's
routes: the first time a path is asked for, it finds the answering router
the way the app would (in order, first full match) and remembers it; later
requests for that path go straight to it.

What it remembers cannot go stale: matching reads only the scope's type,
method, root path and path, so the same key picks the same router for as
long as the routes before it stay as they are. Only included routers are
remembered (a Mount or a bare route records its own path on the request's
telemetry when the app selects it); paths no route fully matches are left to
the app's own loop, which answers 405s, slash redirects and 404s as before.
The index is bounded, least recently used first out, because paths that
carry a task id are as many as the tasks.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match, Mount, NoMatchFound, Router
from starlette.types import Receive, Scope, Send

__all__ = ["RouteIndex", "install"]

#: the scope key that carries the chosen route from ``matches`` to ``handle``
TARGET = "conveyor.route_index.target"
#: paths remembered (static paths are a few dozen; the rest are task-id paths passing through)
SIZE = 2048

Key = tuple[str, str | None, str, str]


class RouteIndex(BaseRoute):
    def __init__(self, router: Router, size: int = SIZE) -> None:
        self.router = router
        self.size = size
        #: path → the included router that answers it, or None: the app's own loop decides
        self._known: OrderedDict[Key, BaseRoute | None] = OrderedDict()

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        key: Key = (scope["type"], scope.get("method"), scope.get("root_path", ""), scope["path"])
        if key in self._known:
            known = self._known[key]
            self._known.move_to_end(key)
            if known is None:
                return Match.NONE, {}
            match, child = known.matches(scope)
            if match is Match.FULL:
                return Match.FULL, {**child, TARGET: known}
            del self._known[key]  # the routes changed under it; find it again
        for route in self.router.routes:
            if route is self:
                continue
            match, child = route.matches(scope)
            if match is Match.FULL:
                found = route if is_included_router(route) else None
                self._remember(key, found)
                return (Match.FULL, {**child, TARGET: route}) if found else (Match.NONE, {})
        # No full match: a 405, a slash redirect or a 404, which the app's loop answers; not remembered.
        return Match.NONE, {}

    def _remember(self, key: Key, route: BaseRoute | None) -> None:
        self._known[key] = route
        if len(self._known) > self.size:
            self._known.popitem(last=False)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: BaseRoute = scope.pop(TARGET)
        await route.handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)  # it names no route of its own

    def __repr__(self) -> str:
        return f"RouteIndex({len(self._known)} paths)"


def is_included_router(route: BaseRoute) -> bool:
    """A router kept whole by ``include_router`` (as FastAPI 0.16x keeps them): selecting it records nothing on
    the request (no ``path_format``) that going through the index would skip."""
    return (
        not isinstance(route, Mount | APIRoute)
        and hasattr(route, "original_router")
        and getattr(route, "path_format", None) is None
    )


def install(router: Router) -> RouteIndex | None:
    """Put an index first in ``router``'s routes, once all of them are added.

    None where there is nothing to index: a FastAPI that flattens included
    routers into plain routes, which the index would only scan twice.
    """
    if not any(is_included_router(r) for r in router.routes):
        return None
    index = RouteIndex(router)
    router.routes.insert(0, index)
    return index
