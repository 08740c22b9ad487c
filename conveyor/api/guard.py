"""Text a database cannot hold is refused at the edge, with a 422 that names where it was.

PostgreSQL's text and jsonb cannot hold a NUL character, and no database
driver can encode a lone UTF-16 surrogate (``"\\ud800"`` in JSON) as UTF-8:
either would become a 500 deep in a store call. ``InputGuardMiddleware``
checks the path and the query string of every request; ``check_text``
checks a decoded JSON body (``read_json_object`` calls it).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.errors import InvalidParams

__all__ = ["InputGuardMiddleware", "check_text"]


def _problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate)"
    return None


def check_text(value: Any, where: str = "body") -> None:
    """Raise InvalidParams naming the first string (or key) in ``value`` that cannot be stored."""
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            problem = _problem(item)
            if problem:
                raise InvalidParams.for_field(path, problem, type="text")
        elif isinstance(item, dict):
            for key, sub in item.items():
                name = key if path == "body" else f"{path}.{key}"
                problem = _problem(key)
                if problem:
                    raise InvalidParams.for_field(name, f"its name {problem}", type="text")
                stack.append((name, sub))
        elif isinstance(item, list):
            stack.extend((f"{path}.{i}", sub) for i, sub in enumerate(item))


class InputGuardMiddleware:
    """422 for a path or query string whose decoded bytes hold a NUL or are not UTF-8."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
            query = scope.get("query_string", b"")
            problem = _bytes_problem(raw_path, "path") or (
                _bytes_problem(query.replace(b"+", b" "), "query") if query else None
            )
            if problem is not None and scope["type"] == "http":
                await _reject(send, *problem)
                return
            if problem is not None:
                await send({"type": "websocket.close", "code": 1007})
                return
        await self.app(scope, receive, send)


def _bytes_problem(raw: bytes, where: str) -> tuple[str, str] | None:
    """What is wrong with ``raw`` once percent-decoded (plain ASCII without a ``%`` needs no decoding)."""
    data = raw if raw.isascii() and b"%" not in raw else unquote_to_bytes(raw)
    if b"\x00" in data:
        return where, "must not contain a NUL character"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return where, "is not valid UTF-8"
    return None


async def _reject(send: Send, where: str, message: str) -> None:
    error = InvalidParams.for_field(where, message, type="text")
    body = json.dumps(error.to_dict()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 422,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
