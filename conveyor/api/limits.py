"""Limits at the edge: the request body's size, and each tenant's request rate and open streams."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.errors import RateLimited

__all__ = ["BodyLimitMiddleware", "TenantLimits"]


class BodyLimitMiddleware:
    """Answer 413 for a body over ``max_bytes``: at once from Content-Length, or
    as soon as a streamed (chunked) body passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared: int | None = None
        chunked = False
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _reject(send, 400, "bad_request", "Content-Length is not a number", limit)
                    return
                if declared > limit:
                    await _reject(send, 413, "payload_too_large", _too_large(limit), limit)
                    return
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and declared >= 0 and not chunked:
            # The server reads no more than the declared length: nothing to count.
            await self.app(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                await _reject(send, 413, "payload_too_large", _too_large(limit), limit)


class _TooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so that FastAPI's body parsing
    passes it on as a 413 instead of wrapping it in a generic 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large(limit))
        self.details = {"max_bytes": limit}


def _too_large(limit: int) -> str:
    return f"request body is larger than the limit of {limit / (1024 * 1024):g} MiB"


async def _reject(send: Send, status: int, code: str, message: str, limit: int) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "details": {"max_bytes": limit}}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class TenantLimits:
    """Per-tenant request rate (a token bucket) and open live streams, so one tenant cannot starve the rest.

    In-process: each API process keeps its own buckets, so with N API
    processes a tenant gets up to N times the rate. Operators are not limited.
    """

    def __init__(self, rate: float, burst: int, max_streams: int) -> None:
        self.rate = rate
        self.burst = burst
        self.max_streams = max_streams
        self._buckets: dict[str, tuple[float, float]] = {}
        self._streams: dict[str, int] = {}
        self._lock = threading.Lock()

    def hit(self, tenant: str, *, now: float | None = None, cost: int = 1) -> None:
        """Take ``cost`` requests (a batch counts each task) from the tenant's bucket; RateLimited with the
        seconds to wait when it holds fewer (a cost above the burst can never pass: the batch is too long)."""
        if self.rate <= 0:
            return
        t = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(tenant, (float(self.burst), t))
            tokens = min(float(self.burst), tokens + (t - last) * self.rate)
            if tokens < cost:
                self._buckets[tenant] = (tokens, t)
                raise RateLimited(
                    f"tenant {tenant!r} is sending more than {self.rate:g} requests a second",
                    retry_after=(cost - tokens) / self.rate,
                )
            self._buckets[tenant] = (tokens - cost, t)
            if len(self._buckets) > 100_000:  # forget idle tenants rather than grow without end
                self._buckets = {k: v for k, v in self._buckets.items() if t - v[1] < 60}

    def open_stream(self, tenant: str) -> Callable[[], None]:
        """Take one of the tenant's live-stream slots; returns the function that gives it back.

        Taken before the stream's response starts, so that a tenant over its
        limit gets a 429 rather than a stream that ends at once.
        """
        with self._lock:
            open_now = self._streams.get(tenant, 0)
            if self.max_streams and open_now >= self.max_streams:
                raise RateLimited(
                    f"tenant {tenant!r} already has {open_now} live streams open (the most is {self.max_streams})",
                    retry_after=5.0,
                )
            self._streams[tenant] = open_now + 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                left = self._streams.get(tenant, 1) - 1
                if left:
                    self._streams[tenant] = left
                else:
                    self._streams.pop(tenant, None)

        return release

    def streams_open(self, tenant: str) -> int:
        with self._lock:
            return self._streams.get(tenant, 0)
