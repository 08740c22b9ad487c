"""EventHub: wakes whoever waits on a task when its record changes.

Waiters (``TaskManager.wait``, the SSE stream) re-read the store when woken;
the hub carries no data, so it cannot disagree with the store. Changes made
by another process (a Celery worker) reach no hub here: waiters also poll
the store on a short timer, which is the fallback that always works.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable
from typing import Any

__all__ = ["EventHub"]


class EventHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sync: dict[str, set[threading.Event]] = {}
        self._async: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._any: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def publish(self, task_ids: Iterable[str]) -> None:
        with self._lock:
            if not self._sync and not self._async and not self._any:
                return
            wake_sync: list[threading.Event] = []
            wake_async: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = list(self._any)
            for task_id in task_ids:
                wake_sync.extend(self._sync.get(task_id, ()))
                wake_async.extend(self._async.get(task_id, ()))
        for ev in wake_sync:
            ev.set()
        for loop, aev in wake_async:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(aev.set)

    def wait(self, task_id: str, timeout: float) -> bool:
        """Block until the task changes or ``timeout`` passes."""
        ev = threading.Event()
        with self._lock:
            self._sync.setdefault(task_id, set()).add(ev)
        try:
            return ev.wait(timeout)
        finally:
            self._discard(self._sync, task_id, ev)

    async def wait_async(self, task_id: str | None, timeout: float) -> bool:
        """Await a change of the task (or of any task when ``task_id`` is None)."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            if task_id is None:
                self._any.add(entry)
            else:
                self._async.setdefault(task_id, set()).add(entry)
        try:
            await asyncio.wait_for(entry[1].wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if task_id is None:
                with self._lock:
                    self._any.discard(entry)
            else:
                self._discard(self._async, task_id, entry)

    def _discard(self, table: dict[str, Any], task_id: str, item: object) -> None:
        with self._lock:
            waiters = table.get(task_id)
            if waiters is not None:
                waiters.discard(item)
                if not waiters:
                    del table[task_id]
