"""A final state is written at once: waiting clients do not wait for the progress-coalescing interval."""

from __future__ import annotations

import threading

from conveyor.records import Status, TaskEvent, TaskRecord, now
from conveyor.stores.base import Change
from conveyor.stores.memory import MemoryStore
from conveyor.stores.writer import BufferedWriter


def _writer(flushed: list[list[str]], event: threading.Event) -> tuple[BufferedWriter, MemoryStore]:
    store = MemoryStore()
    store.open()
    store.insert([TaskRecord(id="t1", type="x"), TaskRecord(id="t2", type="x")])

    def on_flushed(changes: object) -> None:
        flushed.append([c.task_id for c in changes])  # type: ignore[attr-defined]
        event.set()

    # An interval far longer than the test: only a write that does not wait for it can land.
    writer = BufferedWriter(store, interval=3600, on_flushed=on_flushed)
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
