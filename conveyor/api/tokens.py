"""Stream tokens: short-lived credentials for the one place a browser cannot send a header.

``EventSource`` cannot set ``Authorization``, so a live stream's URL must
carry the credential. Rather than the API key itself (which would then sit in
browser history and proxy logs), the dashboard asks ``POST
/api/v1/session/stream-token`` for a token that names the caller and expires
after a few minutes, signed with HMAC-SHA256. The signing key is
``CONVEYOR_SECRET_KEY`` when set (give every API replica the same one), else
derived from the configured API keys, so replicas sharing keys share it too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from conveyor.settings import Settings

__all__ = ["STREAM_TOKEN_TTL", "issue", "verify"]

#: seconds a stream token stays valid (an open stream stays open past it)
STREAM_TOKEN_TTL = 300


def _secret(settings: Settings) -> bytes:
    if settings.secret_key:
        return settings.secret_key.encode()
    material = json.dumps([sorted(settings.api_keys.items()), sorted(settings.operator_keys.items())])
    return hashlib.sha256(b"conveyor-stream-token\0" + material.encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(settings: Settings, tenant: str, operator: bool, *, now: float | None = None) -> str:
    claims = {"t": tenant, "o": operator, "e": int((time.time() if now is None else now) + STREAM_TOKEN_TTL)}
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = _b64(hmac.new(_secret(settings), body.encode(), hashlib.sha256).digest())
    return f"{body}.{signature}"


def verify(settings: Settings, token: str, *, now: float | None = None) -> tuple[str, bool] | None:
    """``(tenant, operator)`` of a valid, unexpired token; None otherwise."""
    body, _, signature = token.partition(".")
    if not body or not signature or len(token) > 2000:
        return None
    expected = _b64(hmac.new(_secret(settings), body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature):
        return None
    try:
        claims = json.loads(_unb64(body))
        tenant, operator, expires = str(claims["t"]), bool(claims["o"]), float(claims["e"])
    except (ValueError, KeyError, TypeError):
        return None
    if expires < (time.time() if now is None else now):
        return None
    return tenant, operator
