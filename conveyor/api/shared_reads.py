"""Reads shared by the live streams that watch one task.

A change of a task wakes every stream that watches it, and each used to read
the task's new steps (and, on a state change, its record) for itself: fifty
browsers on one task made fifty identical reads per progress step. Streams
woken together now share one read: a read is reused by a stream when it
began after the last change the hub published for that task
(``EventHub.version``), so it holds everything that stream was woken for,
and when it is at most ``MAX_AGE`` old, so that a change nobody published
(a lost notification, which the streams' poll covers) is read at the next
poll, not served stale. One read per task, per position in its timeline,
per loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from conveyor.hub import EventHub
from conveyor.records import TaskEvent, TaskRecord
from conveyor.stores.base import Store

__all__ = ["SharedReads"]

#: a read older than this is not shared (seconds)
MAX_AGE = 0.05
#: entries kept before the old ones are dropped
SIZE = 4096


@dataclass
class _Read:
    version: int
    started: float
    result: asyncio.Future[Any]


class SharedReads:
    def __init__(self, store: Store, hub: EventHub) -> None:
        self.store = store
        self.hub = hub
        self._reads: dict[tuple[Any, ...], _Read] = {}

    async def events(self, task_id: str, after_seq: int) -> list[TaskEvent]:
        """``store.aevents``, shared."""
        found: list[TaskEvent] = await self._shared(
            task_id, ("events", after_seq), lambda: self.store.aevents(task_id, after_seq)
        )
        return found

    async def record(self, task_id: str) -> TaskRecord | None:
        """``store.aget``, shared."""
        found: TaskRecord | None = await self._shared(task_id, ("record",), lambda: self.store.aget(task_id))
        return found

    async def _shared(self, task_id: str, what: tuple[Any, ...], read: Callable[[], Awaitable[Any]]) -> Any:
        key = (asyncio.get_running_loop(), task_id, *what)
        version = self.hub.version(task_id)
        now = time.monotonic()
        known = self._reads.get(key)
        if known is None or known.version < version or now - known.started > MAX_AGE:
            if len(self._reads) >= SIZE:
                self._reads = {k: r for k, r in self._reads.items() if now - r.started <= MAX_AGE}
            known = self._reads[key] = _Read(version, now, asyncio.ensure_future(read()))
        # Shielded: a stream that goes away mid-read does not cancel the read the others wait for.
        return await asyncio.shield(known.result)
