"""The correctness figures of a row, read from the store or over HTTP."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from conveyor import Conveyor

FINAL = frozenset({"SUCCESS", "FAILURE", "CANCELLED"})


def tally(finals: Mapping[str, list[str]], attempts: Iterable[int]) -> dict[str, Any]:
    """``completed_once``, ``lost`` and ``max_executions`` from each task's final states on its timeline."""
    return {
        "completed_once": sum(len(states) == 1 for states in finals.values()),
        "lost": sum(not states for states in finals.values()),
        "max_executions": max(attempts, default=0),
    }


def store_figures(app: Conveyor, ids: list[str]) -> dict[str, Any]:
    """The figures of ``ids`` read from ``app``'s store (every state the timeline holds, every attempt counted)."""
    finals = {
        i: [e.state.value for e in app.store.events(i) if e.kind == "state" and e.state.value in FINAL] for i in ids
    }
    return tally(finals, (r.attempts for r in app.store.get_many(ids)))
