"""A fork waits until no SQLite write or WAL checkpoint of this process is in flight.

SQLite's mutexes (its memory allocator's among them) belong to the whole
process. A process forked while another thread is inside SQLite inherits
such a mutex locked, and the child hangs at its first connect: seen in CI as
a local worker stuck at its task's first query (py-spy: ``pthread_mutex_lock``
in ``sqlite3Malloc``), forked while the store's checkpoint thread ran. The
threads that use SQLite in the background (the writer's writes, the
checkpointer) hold a :class:`Guard` while they do; ``os.register_at_fork``
takes every guard before a fork and gives it back after it, in the parent
and in the child. Every other use of a SQLite connection (a read in a request's thread
or on the event loop, a workload's query) holds :data:`IN_USE`, a guard many
threads hold at once: a fork waits until none holds it, and new holders wait
for the fork. A guard not free within ``FORK_WAIT`` seconds is passed
over, so that a fork made while its own thread holds one goes on (at the old
risk) instead of hanging.

A child also inherits SQLite's record of the locks its parent's connections
hold on each database file (one record per file and process, in the library).
A connection the child opens finds that record, believes the locks already
taken and takes none: its reads hold no real lock, and the parent may
checkpoint, truncate or delete the WAL under them ("disk I/O error" in a
local worker's document ingestion, seen in CI). Every SQLite connection
Conveyor opens is a :class:`SQLiteConnection`; the first one a forked child
opens closes the copies it inherited, so the record starts afresh with the
child's own locks. (Closing a copy that was inside a write at the fork rolls
it back, which touches the WAL index the parent shares: the store's own writes
never are, since a fork waits for them; a write outside them, a workload's
own, at the very moment of a fork is the risk left.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import weakref
from types import TracebackType
from typing import Any

__all__ = ["FORK_WAIT", "IN_USE", "Guard", "SQLiteConnection", "SharedGuard"]

#: the longest a fork waits for one guard (seconds)
FORK_WAIT = 5.0

log = logging.getLogger("conveyor.stores")

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


class SharedGuard:
    """A guard that many threads hold at once; a fork waits until none does, new holders wait for the fork.

    Holders do not nest it on purpose: one that takes it again while a fork waits waits with it, for
    ``FORK_WAIT`` at most. Taken and given back by different threads is fine (a pooled connection may
    be checked in by the thread that finalizes it).
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._holders = 0
        self._forking = False

    def __enter__(self) -> SharedGuard:
        self.enter()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.leave()

    def enter(self) -> None:
        with self._cond:
            if self._forking:
                self._cond.wait_for(lambda: not self._forking, FORK_WAIT)
            self._holders += 1

    def leave(self) -> None:
        with self._cond:
            self._holders -= 1
            if self._holders <= 0:
                self._cond.notify_all()

    @property
    def holders(self) -> int:
        return self._holders

    def _before_fork(self) -> bool:
        with self._cond:
            self._forking = True
            return self._cond.wait_for(lambda: self._holders <= 0, FORK_WAIT)

    def _after_fork_in_parent(self) -> None:
        with self._cond:
            self._forking = False
            self._cond.notify_all()


#: held by every use of a SQLite connection outside the store's own guarded writes
IN_USE = SharedGuard()


def _before_fork() -> None:
    guards = sorted(_guards, key=lambda g: g.rank)
    _taken.guards = [g for g in guards if g._lock.acquire(timeout=FORK_WAIT)]
    idle = IN_USE._before_fork()
    if len(_taken.guards) < len(guards) or not idle:
        # Only logged: the child may hang at its first SQLite call or hold no real lock.
        log.warning(
            "fork after waiting %.0fs for SQLite: %d of %d guards free, %d connections still in use",
            FORK_WAIT,
            len(_taken.guards),
            len(guards),
            IN_USE.holders,
        )


def _after_fork_in_parent() -> None:
    IN_USE._after_fork_in_parent()
    _give_back()


def _after_fork_in_child() -> None:
    global _connections_lock
    # The threads that held them are not in the child; their locks may have been copied held
    # (a connection being made in another thread at the fork holds the registry's).
    IN_USE._reset()
    _connections_lock = threading.Lock()
    _give_back()


def _give_back() -> None:
    for guard in getattr(_taken, "guards", ()):
        guard._lock.release()
    _taken.guards = []


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


_connections: weakref.WeakSet[SQLiteConnection] = weakref.WeakSet()
_connections_lock = threading.Lock()
#: the process whose inherited connections are already forgotten
_checked_pid = os.getpid()


class SQLiteConnection(sqlite3.Connection):
    """A SQLite connection (``sqlite3.connect(..., factory=SQLiteConnection)``) that a fork's child
    does not share: the first one opened in a child closes the ones inherited from its parent."""

    def __init__(self, database: Any, *args: Any, **kwargs: Any) -> None:
        forget_inherited()
        super().__init__(database, *args, **kwargs)
        self.pid = os.getpid()
        # An in-memory database has no file locks; its copy is the child's only copy of it.
        name = str(database)
        self.on_file = name not in ("", ":memory:") and "mode=memory" not in name
        with _connections_lock:
            _connections.add(self)


def forget_inherited() -> int:
    """Close this process's copies of the file connections an ancestor opened; how many were closed."""
    global _checked_pid
    pid = os.getpid()
    if pid == _checked_pid:
        return 0
    with _connections_lock:
        _checked_pid = pid
        inherited = [c for c in _connections if c.pid != pid]
        for conn in inherited:
            _connections.discard(conn)
    closed = 0
    for conn in inherited:
        if not conn.on_file:
            continue
        with contextlib.suppress(sqlite3.Error):
            conn.close()
            closed += 1
    return closed
