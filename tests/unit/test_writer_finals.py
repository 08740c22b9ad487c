"""A final state someone waits on is written at once: waiting clients do not wait for the coalescing interval."""

from __future__ import annotations

import asyncio
import threading
import time

from conveyor.hub import EventHub
from conveyor.records import Status, TaskEvent, TaskRecord, now
from conveyor.stores.base import Change
from conveyor.stores.memory import MemoryStore
from conveyor.stores.writer import BufferedWriter


def _writer(
    flushed: list[list[str]], event: threading.Event, hub: EventHub | None = None
) -> tuple[BufferedWriter, MemoryStore]:
    store = MemoryStore()
    store.open()
    store.insert([TaskRecord(id="t1", type="x"), TaskRecord(id="t2", type="x")])

    def on_flushed(changes: object) -> None:
        flushed.append([c.task_id for c in changes])  # type: ignore[attr-defined]
        event.set()

    # An interval far longer than the test: only a write that does not wait for it can land.
    writer = BufferedWriter(store, interval=3600, on_flushed=on_flushed, watched=hub.watched if hub else None)
    if hub is not None:
        hub.on_watch = writer.hurry
    writer.start()
    return writer, store


def test_a_final_state_is_written_without_waiting_for_the_interval() -> None:
    flushed: list[list[str]] = []
    event = threading.Event()
    writer, store = _writer(flushed, event)
    try:
        writer.put(Change("t2", {"progress": 40.0}))
        at = now()
        writer.put(
            Change(
                "t1",
                {"state": Status.SUCCESS, "result": 1, "finished_at": at, "progress": 100.0},
                [TaskEvent("t1", at, Status.SUCCESS, 100.0, "Done")],
            )
        )
        assert event.wait(30), "the final state waited for the flush interval"
        record = store.get("t1")
        assert record is not None
        assert record.state is Status.SUCCESS
        # Whatever else was buffered went out in the same write.
        assert sorted(flushed[0]) == ["t1", "t2"]
    finally:
        writer.stop(5)


def test_progress_alone_waits_for_the_interval() -> None:
    flushed: list[list[str]] = []
    event = threading.Event()
    writer, store = _writer(flushed, event)
    try:
        writer.put(Change("t1", {"progress": 40.0}))
        assert not event.wait(0.3)
        assert writer.backlog == 1
    finally:
        writer.stop(5)
    assert store.get("t1") is not None


def _final(task_id: str) -> Change:
    at = now()
    return Change(
        task_id,
        {"state": Status.SUCCESS, "result": 1, "finished_at": at, "progress": 100.0},
        [TaskEvent(task_id, at, Status.SUCCESS, 100.0, "Done")],
    )


def _watched_writer(flushed: list[list[str]], event: threading.Event) -> tuple[BufferedWriter, EventHub]:
    """A writer told by a hub who waits, as Conveyor wires them."""
    hub = EventHub()
    writer, _store = _writer(flushed, event, hub)
    return writer, hub


def test_a_final_state_nobody_waits_on_is_batched_with_the_next_interval() -> None:
    """A Celery worker's outcomes, or a pool's that nobody follows: one write a task would halve a busy pool."""
    flushed: list[list[str]] = []
    event = threading.Event()
    writer, _hub = _watched_writer(flushed, event)
    try:
        writer.put(_final("t1"))
        assert not event.wait(0.3)
        assert writer.backlog == 1
    finally:
        writer.stop(5)


def test_a_final_state_a_waiter_watches_is_written_at_once() -> None:
    flushed: list[list[str]] = []
    event = threading.Event()
    writer, hub = _watched_writer(flushed, event)
    woken = threading.Event()
    waiter = threading.Thread(target=lambda: hub.wait("t1", 30) and woken.set())
    waiter.start()
    try:
        while not hub.watched("t1"):
            time.sleep(0.01)
        writer.put(_final("t1"))
        assert event.wait(30), "a watched final state waited for the flush interval"
        assert flushed == [["t1"]]
    finally:
        writer.stop(5)
        hub.publish(["t1"])
        waiter.join(5)


def test_a_waiter_who_comes_after_the_final_state_hurries_its_write() -> None:
    """wait() called just after the outcome was buffered does not wait for the interval either."""
    flushed: list[list[str]] = []
    event = threading.Event()
    writer, hub = _watched_writer(flushed, event)
    try:
        writer.put(_final("t2"))
        writer.put(_final("t1"))
        assert not event.wait(0.2)
        hub.wait("t1", 0.01)  # starts to wait: the writer is hurried, whatever the wait's outcome
        assert event.wait(30), "the late waiter's task stayed in the buffer"
        assert sorted(flushed[0]) == ["t1", "t2"]
    finally:
        writer.stop(5)


def test_a_stream_that_waits_on_every_task_hurries_outcomes_not_progress() -> None:
    """The all-tasks stream re-waits after each flush: progress it finds buffered keeps the interval."""
    flushed: list[list[str]] = []
    event = threading.Event()
    writer, hub = _watched_writer(flushed, event)

    async def wait_on_every_task() -> None:
        await hub.wait_async(None, 0.01)

    try:
        writer.put(Change("t1", {"progress": 40.0}))
        asyncio.run(wait_on_every_task())
        assert not event.wait(0.3), "a stream's wait hurried progress"
        writer.put(Change("t2", {"progress": 10.0}))  # unwatched now: buffered
        writer.put(_final("t2"))
        asyncio.run(wait_on_every_task())
        assert event.wait(30), "the outcome waited for the interval"
        assert sorted(flushed[0]) == ["t1", "t2"]
    finally:
        writer.stop(5)
