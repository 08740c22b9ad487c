"""/api/v1/session: what a client needs before its first call (is a key needed, whose is it)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from conveyor import __version__
from conveyor.api import tokens
from conveyor.api.deps import App, Caller, Who, get_caller
from conveyor.api.routing import SlashRouter
from conveyor.errors import AuthenticationError

__all__ = ["router"]

router = SlashRouter(prefix="/api/v1/session", tags=["system"])


@router.get("", summary="Whether an API key is needed, and the tenant of the one sent")
def session(request: Request, app: App) -> dict[str, Any]:
    """Never 401: a missing or wrong key answers ``authenticated: false`` (the dashboard asks for one)."""
    try:
        caller: Caller | None = get_caller(request, app)
    except AuthenticationError:
        caller = None
    tenant = caller.tenant if caller else None
    authenticated = tenant is not None
    return {
        "auth_required": bool(app.settings.api_keys),
        "authenticated": authenticated,
        "tenant": tenant,
        # Only a caller with a key learns how the service is set up.
        "workloads": app.workloads.names() if authenticated else [],
        "executor": app.settings.executor if authenticated else None,
        # operators see the whole deployment: queues, workers, metrics, tracebacks
        "operator": bool(caller and caller.operator),
        "version": __version__,
    }


@router.post("/stream-token", summary="A short-lived token for live streams (EventSource cannot send headers)")
def stream_token(app: App, caller: Who) -> dict[str, Any]:
    """Put it in a stream's URL as ``?stream_token=``; the API key never has to be there."""
    return {
        "token": tokens.issue(app.settings, caller.tenant, caller.operator),
        "expires_in": tokens.STREAM_TOKEN_TTL,
    }
