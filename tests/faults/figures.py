"""The correctness figures of a row, read from a store: one outcome per task, none lost, executions counted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conveyor.stores.base import Store

FINAL = frozenset({"SUCCESS", "FAILURE", "CANCELLED"})


def final_states(store: Store, task_id: str) -> list[str]:
    """Every final state on the task's timeline: exactly one when its outcome was recorded once."""
    return [e.state.value for e in store.events(task_id) if e.kind == "state" and e.state.value in FINAL]


def store_figures(store: Store, ids: list[str]) -> dict[str, Any]:
    """``completed_once``, ``lost`` and ``max_executions`` of ``ids`` (each execution counts in ``attempts``)."""
    finals = [final_states(store, i) for i in ids]
    attempts = [r.attempts for start in range(0, len(ids), 500) for r in store.get_many(ids[start : start + 500])]
    return {
        "completed_once": sum(len(states) == 1 for states in finals),
        "lost": sum(not states for states in finals),
        "max_executions": max(attempts, default=0),
    }


@contextmanager
def served_store(folder: Path) -> Iterator[Store]:
    """The SQLite store a ``conveyor serve`` started in ``folder`` keeps (read after the server stopped)."""
    from conveyor.stores.sql import SqlStore

    store = SqlStore(f"sqlite:///{folder / 'conveyor-data' / 'conveyor.db'}")
    store.open()
    try:
        yield store
    finally:
        store.close()


def wait_final(store: Store, ids: list[str], timeout: float) -> bool:
    """Wait until every one of ``ids`` is final; False if ``timeout`` passed first (the row is recorded anyway)."""
    deadline = time.monotonic() + timeout
    while True:
        records = [r for start in range(0, len(ids), 500) for r in store.get_many(ids[start : start + 500])]
        if len(records) == len(ids) and all(r.finished for r in records):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
