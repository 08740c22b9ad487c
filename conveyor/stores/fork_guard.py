"""A fork waits until no SQLite write or WAL checkpoint of this process is in flight.

SQLite's mutexes (its memory allocator's among them) belong to the whole
process. A process forked while another thread is inside SQLite inherits
such a mutex locked, and the child hangs at its first connect: seen in CI as
a local worker stuck at its task's first query (py-spy: ``pthread_mutex_lock``
in ``sqlite3Malloc``), forked while the store's checkpoint thread ran. The
threads that use SQLite in the background (the writer's writes, the
checkpointer) hold a :class:`Guard` while they do; ``os.register_at_fork``
takes every guard before a fork and gives it back after it, in the parent
and in the child. A guard not free within ``FORK_WAIT`` seconds is passed
over, so that a fork made while its own thread holds one goes on (at the old
risk) instead of hanging.
"""

from __future__ import annotations

import os
import threading
import weakref
from types import TracebackType

__all__ = ["FORK_WAIT", "Guard"]

#: the longest a fork waits for one guard (seconds)
FORK_WAIT = 5.0

_guards: weakref.WeakSet[Guard] = weakref.WeakSet()
_taken = threading.local()


class Guard:
    """A lock that forks of this process wait for. ``rank``: guards are taken in rank order, as their
    holders nest them (a checkpoint that truncates the WAL takes the write lock inside its own)."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self._lock = threading.Lock()
        _guards.add(self)

    def __enter__(self) -> Guard:
        self._lock.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


def _before_fork() -> None:
    _taken.guards = [g for g in sorted(_guards, key=lambda g: g.rank) if g._lock.acquire(timeout=FORK_WAIT)]


def _after_fork() -> None:
    for guard in getattr(_taken, "guards", ()):
        guard._lock.release()
    _taken.guards = []


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)
