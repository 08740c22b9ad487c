"""The delete routes' first step: cancel the task if it has not finished, and never fail because it has."""

from __future__ import annotations

from conveyor import Status
from tests.conftest import AppFactory


def test_cancel_if_unfinished_cancels_a_waiting_task_and_lets_finished_or_unknown_ones_be(
    make_app: AppFactory,
) -> None:
    app = make_app(database_url="memory://", workloads=["system"])
    waiting = app.manager.submit_task("system.sleep", {"seconds": 0, "steps": 1}, tenant="alpha", delay=60)
    cancelled = app.manager.cancel_if_unfinished(waiting.id, tenant="alpha")
    assert cancelled is not None
    assert cancelled.state is Status.CANCELLED
    assert app.manager.cancel_if_unfinished(waiting.id, tenant="alpha") is None  # finished: the 409 is not raised
    assert app.manager.cancel_if_unfinished("no-such-task", tenant="alpha") is None
    assert app.manager.cancel_if_unfinished(None) is None
    other = app.manager.submit_task("system.sleep", {"seconds": 0, "steps": 1}, tenant="beta", delay=60)
    assert app.manager.cancel_if_unfinished(other.id, tenant="alpha") is None  # another tenant's: as if unknown
    assert app.store.get(other.id).state is Status.PENDING  # type: ignore[union-attr]
