"""/api/v1/session: what a client needs before its first call (is a key needed, whose is it)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from conveyor import __version__
from conveyor.api.deps import App, get_tenant
from conveyor.api.routing import SlashRouter
from conveyor.errors import AuthenticationError

__all__ = ["router"]

router = SlashRouter(prefix="/api/v1/session", tags=["system"])


@router.get("", summary="Whether an API key is needed, and the tenant of the one sent")
def session(request: Request, app: App) -> dict[str, Any]:
    """Never 401: a missing or wrong key answers ``authenticated: false`` (the dashboard asks for one)."""
    try:
        tenant: str | None = get_tenant(request, app)
    except AuthenticationError:
        tenant = None
    authenticated = tenant is not None
    return {
        "auth_required": bool(app.settings.api_keys),
        "authenticated": authenticated,
        "tenant": tenant,
        # Only a caller with a key learns how the service is set up.
        "workloads": app.workloads.names() if authenticated else [],
        "executor": app.settings.executor if authenticated else None,
        "version": __version__,
    }
