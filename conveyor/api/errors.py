"""One place that turns every failure into ``{"error": {code, message, details}}``."""

from __future__ import annotations

import logging
import math
import sqlite3
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor.errors import ConveyorError, StoreError, Unavailable

__all__ = ["dependency_outage", "error_body", "install_error_handlers"]

log = logging.getLogger("conveyor.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_params",
    429: "too_many_requests",
    503: "unavailable",
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    # "body.params.seconds" reads better as "params.seconds"; "query.limit" as "limit".
    if parts and parts[0] in ("body", "query", "path", "header", "form"):
        parts = parts[1:]
    return ".".join(parts) or "body"


_SQLITE_OUTAGES = ("locked", "busy", "unable to open", "disk i/o", "readonly database")


def dependency_outage(exc: BaseException) -> str | None:
    """The dependency an exception says is down or too slow ("database", "redis"), or None.

    Only outage kinds count: a constraint violation or a bad statement is a bug
    and stays a 500. The driver's text is not passed on, as it may name hosts.
    """
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.OperationalError) and isinstance(exc.orig, sqlite3.Error):
        # SQLite files a syntax error or a missing table as OperationalError too: only
        # a busy, locked or unreadable database file is an outage.
        text = str(exc.orig).lower()
        return "database" if any(w in text for w in _SQLITE_OUTAGES) else None
    if isinstance(
        exc, sa_exc.TimeoutError | sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DisconnectionError
    ):
        return "database"
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return "database"
    try:
        import redis.exceptions as redis_exc
    except ImportError:  # the redis extra is not installed: no Redis call can have failed
        return None
    if isinstance(exc, redis_exc.ConnectionError | redis_exc.TimeoutError | redis_exc.BusyLoadingError):
        return "redis"
    return None


def _outage_error(dependency: str) -> ConveyorError:
    message = f"{dependency} unavailable: no answer within its deadline, or the server is down; try again shortly"
    if dependency == "database":
        return StoreError(message)
    return Unavailable(message, dependency=dependency)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ConveyorError)
    async def conveyor_error(_request: Request, exc: ConveyorError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        if exc.status_code in (429, 503):
            # Whole seconds, rounded up: a client that waits this long may try again.
            wait = getattr(exc, "retry_after", 5.0)
            headers = {"Retry-After": str(max(1, math.ceil(wait)))}
        return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": _field(e.get("loc", ())), "message": e.get("msg", "invalid"), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        fields = ", ".join(d["field"] for d in details)
        return JSONResponse(error_body("invalid_params", f"Invalid request: {fields}", details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        details = getattr(exc, "details", None)
        return JSONResponse(error_body(code, message, details), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        outage = dependency_outage(exc)
        if outage is not None:
            # A workload's own SQL or Redis call that hit its deadline or a dead
            # server: the same 503 the store's calls answer, never a 500.
            log.warning("%s %s: %s unavailable (%s)", request.method, request.url.path, outage, type(exc).__name__)
            return await conveyor_error(request, _outage_error(outage))
        log.exception("unhandled error")
        return JSONResponse(error_body("internal_error", f"internal error: {type(exc).__name__}"), status_code=500)
