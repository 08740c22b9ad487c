"""Deadlines on every call a store makes: connect, statement, lock wait, pool checkout.

A database that is down refuses connections at once; one that hangs (a
stopped process, a lost network path) answers nothing, and a call without a
deadline waits forever while holding a pooled connection and a request
thread. Every SQL connection therefore carries:

* ``connect_timeout`` (libpq) for opening it;
* ``statement_timeout`` and ``lock_timeout`` (server side): a slow statement
  or a lock wait on a live server is cancelled cleanly, the connection kept;
* a client-side deadline a second longer on every round trip (commit, ping
  and rollback included): a server that does not answer at all cannot cancel
  anything, so the connection is closed under the call, which then fails.

Both become the store's ``StoreError`` (503 with ``Retry-After``). A write
whose round trip timed out may or may not have committed; every write the
store makes is safe to repeat (the writer re-applies its batch, submits are
deduplicated by their idempotency key).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Deadlines", "pg_connect", "pg_connect_args", "unbounded"]

_UNBOUNDED: contextvars.ContextVar[bool] = contextvars.ContextVar("conveyor_unbounded", default=False)
#: the client-side deadline is this much longer than the server's, so a live server cancels first
_GRACE = 1.0


@dataclass(frozen=True)
class Deadlines:
    """Seconds each kind of dependency call may take (``Settings.store_*_timeout``)."""

    connect: float = 3.0
    statement: float = 5.0
    lock: float = 3.0
    pool: float = 2.0

    @property
    def round_trip(self) -> float:
        return self.statement + _GRACE


@contextlib.contextmanager
def unbounded() -> Iterator[None]:
    """Calls made inside have no client-side deadline (migrations, which may rightly take long)."""
    token = _UNBOUNDED.set(True)
    try:
        yield
    finally:
        _UNBOUNDED.reset(token)


#: a read on a pooled connection the server had dropped (a restart) fails this fast; it is made
#: once more on a fresh connection, but a slower failure (a hung server) is not waited for twice
STALE_CONNECTION_FAILS_WITHIN = 1.0


def pg_connect_args(deadlines: Deadlines, *options: str) -> dict[str, Any]:
    """``connect_args`` for a psycopg engine: connect timeout and the server-side timeouts."""
    server = [
        f"-c statement_timeout={int(deadlines.statement * 1000)}",
        f"-c lock_timeout={int(deadlines.lock * 1000)}",
        *options,
    ]
    # libpq takes whole seconds and treats less than 2 as 2.
    return {"connect_timeout": max(2, round(deadlines.connect)), "options": " ".join(server)}


def pg_connect(deadlines: Deadlines, cargs: Any, cparams: Any) -> Any:
    """A psycopg connection whose every round trip has ``deadlines.round_trip`` seconds (for ``do_connect``)."""
    return _connection_class(deadlines.round_trip).connect(*cargs, **cparams)


@functools.cache
def _connection_class(seconds: float) -> Any:
    import psycopg
    from psycopg import errors

    class DeadlineConnection(psycopg.Connection[Any]):
        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            if timeout is not None or _UNBOUNDED.get():
                return super().wait(gen, interval, timeout)
            try:
                return super().wait(gen, interval, seconds)
            # psycopg raises its private _WaitTimeout when a wait's timeout passes
            # (3.2+). The request is in flight and its reply may still come, so
            # the connection cannot be used again: close it, and fail the call.
            except errors._WaitTimeout as e:
                self.pgconn.finish()
                raise psycopg.OperationalError(f"no answer from the database within {seconds:g}s") from e

    return DeadlineConnection
