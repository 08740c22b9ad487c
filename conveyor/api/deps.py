"""Dependencies shared by the routes: the app, its manager, and the caller's tenant."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request

from conveyor.app import Conveyor
from conveyor.errors import AuthenticationError
from conveyor.manager import TaskManager

__all__ = ["App", "Manager", "Tenant", "get_app", "get_tenant"]


def get_app(request: Request) -> Conveyor:
    conveyor: Conveyor = request.app.state.conveyor
    return conveyor


def get_manager(app: Annotated[Conveyor, Depends(get_app)]) -> TaskManager:
    return app.manager


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def get_tenant(request: Request, app: Annotated[Conveyor, Depends(get_app)]) -> str:
    """The tenant that owns the caller's API key.

    Keys come as ``Authorization: Bearer <key>``, ``X-API-Key: <key>``, or
    ``?api_key=`` (for EventSource in browsers, which cannot set headers).
    With no keys configured every caller is the one local tenant.
    """
    keys = app.settings.api_keys
    if not keys:
        return app.settings.local_tenant
    supplied = request.headers.get("x-api-key")
    auth = request.headers.get("authorization")
    if not supplied and auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            supplied = value.strip()
    if not supplied:
        supplied = request.query_params.get("api_key")
    if not supplied:
        raise AuthenticationError("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'")
    digest = _digest(supplied)
    for key, tenant in keys.items():
        # Compare digests in constant time so the check leaks nothing about keys.
        if hmac.compare_digest(digest, _digest(key)):
            return tenant
    raise AuthenticationError("the API key is not valid")


App = Annotated[Conveyor, Depends(get_app)]
Manager = Annotated[TaskManager, Depends(get_manager)]
Tenant = Annotated[str, Depends(get_tenant)]
