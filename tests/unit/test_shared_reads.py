"""Live streams woken by one change share one read, and never reuse a read older than that change."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor.api import shared_reads
from conveyor.api.shared_reads import SharedReads
from conveyor.hub import EventHub
from conveyor.records import Status, TaskEvent, TaskRecord
from conveyor.stores.base import Change
from conveyor.stores.memory import MemoryStore


class CountingStore(MemoryStore):
    """Counts timeline reads; each takes a moment, as a database round trip does."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def aevents(self, task_id: str, after_seq: int = 0) -> list[TaskEvent]:
        self.reads += 1
        found = self.events(task_id, after_seq)  # what the store holds as the read begins
        await asyncio.sleep(0.01)
        return found


def _setup() -> tuple[CountingStore, EventHub, SharedReads, str]:
    store, hub = CountingStore(), EventHub()
    record = TaskRecord(id="t1", type="t.x", tenant="a")
    store.insert([record])
    return store, hub, SharedReads(store, hub), record.id


def _step(store: MemoryStore, hub: EventHub, task_id: str, progress: float) -> None:
    """A change as the writer makes it: written, then published."""
    event = TaskEvent(task_id, time.time(), Status.PROCESSING, progress, f"at {progress:g}", kind="progress")
    store.apply([Change(task_id, {"progress": progress}, [event])])
    hub.publish([task_id])


def test_streams_woken_by_one_change_make_one_read() -> None:
    store, hub, reads, task_id = _setup()

    async def run() -> list[list[TaskEvent]]:
        subscription = hub.subscribe([task_id])
        try:
            _step(store, hub, task_id, 10)
            return await asyncio.gather(*(reads.events(task_id, 0) for _ in range(50)))
        finally:
            subscription.close()

    results = asyncio.run(run())
    assert store.reads == 1
    assert all([e.message for e in r] == ["at 10"] for r in results)


def test_a_read_begun_before_a_change_is_not_reused_after_it() -> None:
    store, hub, reads, task_id = _setup()

    async def run() -> tuple[list[TaskEvent], list[TaskEvent]]:
        subscription = hub.subscribe([task_id])
        try:
            _step(store, hub, task_id, 10)
            early = asyncio.ensure_future(reads.events(task_id, 0))
            await asyncio.sleep(0.002)  # that read has begun (and holds what the store had then)
            _step(store, hub, task_id, 20)  # a stream woken by this change must see it
            late = await reads.events(task_id, 0)
            return await early, late
        finally:
            subscription.close()

    early, late = asyncio.run(run())
    assert [e.message for e in early] == ["at 10"]
    assert [e.message for e in late] == ["at 10", "at 20"]
    assert store.reads == 2


def test_a_read_older_than_max_age_is_made_again_even_without_a_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """A change nobody published (a lost notification) is read at the streams' next poll."""
    monkeypatch.setattr(shared_reads, "MAX_AGE", 0.02)
    store, _hub, reads, task_id = _setup()

    async def run() -> list[TaskEvent]:
        await reads.events(task_id, 0)
        event = TaskEvent(task_id, time.time(), Status.PROCESSING, 5, "unpublished", kind="progress")
        store.apply([Change(task_id, {"progress": 5.0}, [event])])
        await asyncio.sleep(0.03)
        return await reads.events(task_id, 0)

    assert [e.message for e in asyncio.run(run())] == ["unpublished"]
    assert store.reads == 2


def test_a_stream_that_goes_away_mid_read_leaves_the_read_to_the_others() -> None:
    store, hub, reads, task_id = _setup()
    _step(store, hub, task_id, 10)

    async def run() -> list[TaskEvent]:
        leaving = asyncio.ensure_future(reads.events(task_id, 0))
        staying = asyncio.ensure_future(reads.events(task_id, 0))
        await asyncio.sleep(0)
        leaving.cancel()
        return await staying

    assert [e.message for e in asyncio.run(run())] == ["at 10"]
    assert store.reads == 1
