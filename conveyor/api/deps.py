"""Dependencies shared by the routes: the app, its manager, and who is calling.

A caller is a tenant (an API key in ``CONVEYOR_API_KEYS``) or an operator
(a key in ``CONVEYOR_OPERATOR_KEYS``). Operators may run admin actions and
internal task types; with no keys configured at all the one local caller is
both its tenant and an operator.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from conveyor.api import tokens
from conveyor.api.limits import TenantLimits
from conveyor.app import Conveyor
from conveyor.errors import AuthenticationError, Forbidden
from conveyor.manager import TaskManager

if TYPE_CHECKING:
    from conveyor.settings import Settings

__all__ = [
    "App",
    "Caller",
    "Manager",
    "Operator",
    "Tenant",
    "Who",
    "get_app",
    "get_caller",
    "get_tenant",
    "stream_slot",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """Whose request this is: the tenant that owns what it makes, and whether it may act as an operator."""

    tenant: str
    operator: bool


def get_app(request: Request) -> Conveyor:
    conveyor: Conveyor = request.app.state.conveyor
    return conveyor


def get_manager(app: Annotated[Conveyor, Depends(get_app)]) -> TaskManager:
    return app.manager


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


#: id(settings) -> (settings, its api_keys, its operator_keys, digest -> caller)
_key_tables: dict[int, tuple[Settings, object, object, dict[bytes, Caller]]] = {}


def _callers_by_digest(settings: Settings) -> dict[bytes, Caller]:
    """Each configured key's SHA-256 digest mapped to its caller, built once per Settings (not per request).

    Rebuilt when ``api_keys`` or ``operator_keys`` is replaced on the object; an operator's key wins
    over the same key listed as a tenant's.
    """
    entry = _key_tables.get(id(settings))
    current = (settings, settings.api_keys, settings.operator_keys)
    if entry is not None and all(a is b for a, b in zip(entry[:3], current, strict=True)):
        return entry[3]
    table = {_digest(key): Caller(tenant, operator=False) for key, tenant in settings.api_keys.items()}
    table.update({_digest(key): Caller(name, operator=True) for key, name in settings.operator_keys.items()})
    _key_tables[id(settings)] = (settings, settings.api_keys, settings.operator_keys, table)
    return table


def get_caller(request: Request, app: Annotated[Conveyor, Depends(get_app)]) -> Caller:
    """The caller behind the request's API key.

    Keys come as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
    Only on a live stream (a path ending in ``/events``, which a browser's
    EventSource opens without headers) may the URL carry the credential:
    ``?stream_token=`` (from ``POST /api/v1/session/stream-token``), or
    ``?api_key=`` for older clients. With no keys configured every caller is
    the one local tenant.
    """
    keys = app.settings.api_keys
    operators = app.settings.operator_keys
    if not keys and not operators:
        return Caller(app.settings.local_tenant, operator=True)
    supplied = request.headers.get("x-api-key")
    auth = request.headers.get("authorization")
    if not supplied and auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            supplied = value.strip()
    if not supplied and is_stream(request):
        token = request.query_params.get("stream_token")
        if token:
            claims = tokens.verify(app.settings, token)
            if claims is None:
                raise AuthenticationError("the stream token is not valid or has expired; ask for a new one")
            return Caller(claims[0], operator=claims[1])
        supplied = request.query_params.get("api_key")
    if not supplied:
        raise AuthenticationError("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'")
    # Looked up by the SHA-256 digest of the supplied key: the lookup's timing can tell at most
    # something about a digest, never about a key's characters as a string comparison would.
    found = _callers_by_digest(app.settings).get(_digest(supplied))
    if found is None:
        raise AuthenticationError("the API key is not valid")
    return found


def get_caller_limited(request: Request, app: Annotated[Conveyor, Depends(get_app)]) -> Caller:
    """The caller, after taking one request from a tenant's rate limit (429 with Retry-After when spent)."""
    caller = get_caller(request, app)
    if not caller.operator:
        limits: TenantLimits = request.app.state.limits
        limits.hit(caller.tenant)
    return caller


# The dependencies FastAPI resolves are coroutines: a plain ``def`` dependency runs in a worker
# thread, a hop per dependency per request for work that takes microseconds.


async def _app(request: Request) -> Conveyor:
    return get_app(request)


async def _manager(request: Request) -> TaskManager:
    return get_app(request).manager


async def _who(request: Request) -> Caller:
    return get_caller_limited(request, get_app(request))


def get_tenant(caller: Annotated[Caller, Depends(_who)]) -> str:
    """The tenant that owns the caller's API key (an operator's key names its own tenant)."""
    return caller.tenant


async def _tenant(caller: Annotated[Caller, Depends(_who)]) -> str:
    return caller.tenant


async def _operator(caller: Annotated[Caller, Depends(_who)]) -> Caller:
    return require_operator(caller)


def stream_slot(request: Request, caller: Caller) -> Callable[[], None]:
    """One of the caller's live-stream slots (429 past the tenant's limit); call the result when the stream ends."""
    if caller.operator:
        return lambda: None
    limits: TenantLimits = request.app.state.limits
    return limits.open_stream(caller.tenant)


def is_stream(request: Request) -> bool:
    """A Server-Sent Events route: the only kind whose URL may carry a credential."""
    return request.url.path.rstrip("/").endswith("/events")


def require_operator(caller: Caller) -> Caller:
    if not caller.operator:
        raise Forbidden("this action needs an operator's API key (CONVEYOR_OPERATOR_KEYS)")
    return caller


App = Annotated[Conveyor, Depends(_app)]
#: who is calling (tenant and operator flag)
Who = Annotated[Caller, Depends(_who)]
#: an operator, or 403
Operator = Annotated[Caller, Depends(_operator)]
Manager = Annotated[TaskManager, Depends(_manager)]
Tenant = Annotated[str, Depends(_tenant)]
