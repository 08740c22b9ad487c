"""How processing code reports its steps: one callable, so it runs the same in a task, a test or the bench."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Step", "no_steps"]

#: ``step(percent, message)``: reports progress; in a task it also raises if the task was cancelled
Step = Callable[[float, str], None]


def no_steps(percent: float, message: str) -> None:
    """The step reporter of direct calls (tests, bench): reports nothing."""
