"""Waker: how other threads wake the pool loop out of its wait on the worker pipes.

Submitters, the writer (a start was written) and ``stop()`` poke; the loop
waits on the worker connections and on this socket at once. At most one
byte is in flight: a poke while one is pending costs no syscall, which
matters when thousands of tasks a second are submitted or confirmed.
"""

from __future__ import annotations

import contextlib
import socket

__all__ = ["Waker"]


class Waker:
    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        #: a byte is pending (or about to be): a poke need not send another
        self._pending = False

    @property
    def socket(self) -> socket.socket:
        """The end to wait on (``multiprocessing.connection.wait`` takes sockets)."""
        return self._r

    def poke(self) -> None:
        """Wake the loop: callable from any thread, after the thing the loop must see is in place."""
        if self._pending:
            return
        self._pending = True
        with contextlib.suppress(BlockingIOError, OSError):
            self._w.send(b"x")

    def consume(self) -> None:
        """The loop woke on the socket: take the bytes, then allow the next poke to send one.

        In this order: with the flag cleared first, a poke landing between the
        two would set it again and its byte be drained here, leaving the flag
        set with nothing to wake the loop, and every later poke dropped.
        """
        with contextlib.suppress(BlockingIOError, OSError):
            while self._r.recv(4096):
                pass
        self._pending = False

    def close(self) -> None:
        self._r.close()
        self._w.close()
