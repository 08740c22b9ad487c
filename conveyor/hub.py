"""EventHub: wakes whoever waits on a task when its record changes.

Waiters (``TaskManager.wait``, the SSE streams) re-read the store when woken;
the hub carries no data, so it cannot disagree with the store. A
:class:`Subscription` (the many-task stream) also learns *which* of its tasks
changed, so it re-reads those alone: a stream costs its own tasks' changes,
never every change in the process. Changes made by another process (a
Celery worker) reach this hub through the deployment's notifier
(``notify.py``); waiters also poll the store on a timer, the fallback that
always works.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

__all__ = ["EventHub", "Subscription"]


class Subscription:
    """A set of task ids watched from one event loop; ``changed()`` answers which of them changed."""

    def __init__(self, hub: EventHub, task_ids: Iterable[str]) -> None:
        self.hub = hub
        self.task_ids = frozenset(task_ids)
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._pending: set[str] = set()

    def _notify(self, task_id: str) -> None:
        """Under the hub's lock, from any thread."""
        self._pending.add(task_id)
        with contextlib.suppress(RuntimeError):  # that loop has closed
            self._loop.call_soon_threadsafe(self._event.set)

    async def changed(self, timeout: float) -> set[str]:
        """The watched ids that changed since the last call; empty when ``timeout`` passed first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        with self.hub._lock:
            self._event.clear()
            pending, self._pending = self._pending, set()
        return pending

    def close(self) -> None:
        self.hub._unsubscribe(self)


class EventHub:
    def __init__(self) -> None:
        #: told which tasks someone starts waiting on (None: every task), so the writer can hurry their changes
        self.on_watch: Callable[[Iterable[str] | None], None] | None = None
        self._lock = threading.Lock()
        self._sync: dict[str, set[threading.Event]] = {}
        self._async: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._any: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._subs: dict[str, set[Subscription]] = {}
        #: publishes so far; the last one that named each subscribed task, and the last that named all
        self._published = 0
        self._changed: dict[str, int] = {}
        self._all_changed = 0

    def publish(self, task_ids: Iterable[str] | None) -> None:
        """Wake whoever waits on ``task_ids``; ``None``: everyone (changes may have been missed)."""
        with self._lock:
            if not self._sync and not self._async and not self._any and not self._subs:
                return
            ids = list(self._sync.keys() | self._async.keys() | self._subs.keys()) if task_ids is None else task_ids
            self._published += 1
            if task_ids is None:
                self._all_changed = self._published
            wake_sync: list[threading.Event] = []
            wake_async: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = list(self._any)
            for task_id in ids:
                wake_sync.extend(self._sync.get(task_id, ()))
                wake_async.extend(self._async.get(task_id, ()))
                subs = self._subs.get(task_id)
                if subs:
                    self._changed[task_id] = self._published
                    for sub in subs:
                        sub._notify(task_id)
        for ev in wake_sync:
            ev.set()
        for loop, aev in wake_async:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(aev.set)

    def version(self, task_id: str) -> int:
        """The last publish that named this subscribed task (or every task): a read begun once the
        version is ``v`` sees every change published up to ``v`` (a change is published after it is
        written). Only subscribed tasks are counted."""
        return max(self._changed.get(task_id, 0), self._all_changed)

    def watched(self, task_id: str) -> bool:
        """Does anyone here wait on this task? (Read without the lock: a stale answer costs one interval.)"""
        return bool(self._any) or task_id in self._sync or task_id in self._async or task_id in self._subs

    def _watching(self, task_ids: Iterable[str] | None) -> None:
        if self.on_watch is not None:
            self.on_watch(task_ids)

    def subscribe(self, task_ids: Iterable[str]) -> Subscription:
        """Watch ``task_ids`` from the running event loop; ``close()`` the result when done."""
        sub = Subscription(self, task_ids)
        with self._lock:
            for task_id in sub.task_ids:
                self._subs.setdefault(task_id, set()).add(sub)
        self._watching(sub.task_ids)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            for task_id in sub.task_ids:
                subs = self._subs.get(task_id)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._subs[task_id]
                        self._changed.pop(task_id, None)  # watched again later: numbered from later publishes

    @contextlib.contextmanager
    def watch(self, task_id: str) -> Iterator[threading.Event]:
        """An event set when the task changes, from entering until leaving.

        Watch first, then read the store, then wait: a change that lands
        between the read and the wait still sets the event, where a wait begun
        after the read would miss it and sleep a whole poll interval.
        """
        ev = threading.Event()
        with self._lock:
            self._sync.setdefault(task_id, set()).add(ev)
        self._watching((task_id,))
        try:
            yield ev
        finally:
            self._discard(self._sync, task_id, ev)

    def wait(self, task_id: str, timeout: float) -> bool:
        """Block until the task changes or ``timeout`` passes."""
        with self.watch(task_id) as ev:
            return ev.wait(timeout)

    @contextlib.asynccontextmanager
    async def watch_async(self, task_id: str | None) -> AsyncIterator[asyncio.Event]:
        """``watch`` for an event loop (``task_id`` None: any task)."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            if task_id is None:
                self._any.add(entry)
            else:
                self._async.setdefault(task_id, set()).add(entry)
        self._watching(None if task_id is None else (task_id,))
        try:
            yield entry[1]
        finally:
            if task_id is None:
                with self._lock:
                    self._any.discard(entry)
            else:
                self._discard(self._async, task_id, entry)

    async def wait_async(self, task_id: str | None, timeout: float) -> bool:
        """Await a change of the task (or of any task when ``task_id`` is None)."""
        async with self.watch_async(task_id) as changed:
            try:
                await asyncio.wait_for(changed.wait(), timeout)
                return True
            except TimeoutError:
                return False

    def _discard(self, table: dict[str, Any], task_id: str, item: object) -> None:
        with self._lock:
            waiters = table.get(task_id)
            if waiters is not None:
                waiters.discard(item)
                if not waiters:
                    del table[task_id]
