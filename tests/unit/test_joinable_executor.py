"""``conveyor.testing.JoinableExecutor``: tasks run when the test says so, in its own thread.

This is how an application's tests drive Conveyor without a worker: submit,
``join()``, then assert on the store. Everything a worker would record
(attempts, progress, retries, outcome) is recorded the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor, Settings
from conveyor.context import TaskContext
from conveyor.errors import Retry
from conveyor.records import Status
from conveyor.registry import Registry
from conveyor.testing import JoinableExecutor, MemoryStore

registry = Registry()
calls: list[str] = []


@registry.task("joinable.add")
def add(ctx: TaskContext, a: int, b: int) -> int:
    calls.append(f"add {a}+{b}")
    ctx.progress(50, "halfway")
    return a + b


@registry.task("joinable.flaky", max_retries=2, retry_backoff=0.01, retry_jitter=False)
def flaky(ctx: TaskContext, until: int) -> dict[str, Any]:
    calls.append(f"flaky attempt {ctx.attempt}")
    if ctx.attempt < until:
        raise Retry("not yet", countdown=0.01)
    return {"attempt": ctx.attempt}


@registry.task("joinable.boom")
def boom(ctx: TaskContext) -> None:
    raise ValueError("exploded on purpose")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[Conveyor, JoinableExecutor]]:
    calls.clear()
    store = MemoryStore()
    executor = JoinableExecutor(store, registry, data_dir=tmp_path)
    conveyor = Conveyor(
        Settings(database_url="memory://", data_dir=tmp_path),
        registry=registry,
        store=store,
        executor=executor,
        load=False,
    )
    conveyor.start()
    try:
        yield conveyor, executor
    finally:
        conveyor.stop()


def test_nothing_runs_until_join_then_everything_has_run(app: tuple[Conveyor, JoinableExecutor]) -> None:
    conveyor, executor = app
    ids = [conveyor.manager.submit_task("joinable.add", {"a": i, "b": 1}).id for i in range(3)]
    assert calls == []
    assert {conveyor.manager.get(i).state for i in ids} == {Status.PENDING}
    assert executor.pending == 3

    assert executor.join() == 3

    records = [conveyor.manager.get(i) for i in ids]
    assert [r.result for r in records] == [1, 2, 3]
    assert {r.state for r in records} == {Status.SUCCESS}
    assert all(r.attempts == 1 for r in records)
    assert executor.pending == 0
    assert [e.message for e in conveyor.manager.events(ids[0]) if e.message == "halfway"] == ["halfway"]


def test_higher_priority_runs_first_then_submission_order(app: tuple[Conveyor, JoinableExecutor]) -> None:
    conveyor, executor = app
    conveyor.manager.submit_task("joinable.add", {"a": 1, "b": 0})
    conveyor.manager.submit_task("joinable.add", {"a": 2, "b": 0}, priority=5)
    conveyor.manager.submit_task("joinable.add", {"a": 3, "b": 0})
    executor.join()
    assert calls == ["add 2+0", "add 1+0", "add 3+0"]


def test_join_runs_the_retries_a_task_schedules(app: tuple[Conveyor, JoinableExecutor]) -> None:
    conveyor, executor = app
    task_id = conveyor.manager.submit_task("joinable.flaky", {"until": 3}).id
    assert executor.join() == 3
    record = conveyor.manager.get(task_id)
    assert record.state is Status.SUCCESS
    assert record.result == {"attempt": 3}
    assert record.attempts == 3
    assert calls == ["flaky attempt 1", "flaky attempt 2", "flaky attempt 3"]


def test_a_task_error_is_its_failure_not_the_tests(app: tuple[Conveyor, JoinableExecutor]) -> None:
    conveyor, executor = app
    task_id = conveyor.manager.submit_task("joinable.boom", {}).id
    executor.join()
    record = conveyor.manager.get(task_id)
    assert record.state is Status.FAILURE
    assert record.error is not None
    assert record.error["message"] == "exploded on purpose"


def test_a_task_cancelled_before_join_never_runs(app: tuple[Conveyor, JoinableExecutor]) -> None:
    conveyor, executor = app
    keep = conveyor.manager.submit_task("joinable.add", {"a": 1, "b": 1}).id
    drop = conveyor.manager.submit_task("joinable.add", {"a": 9, "b": 9}).id
    conveyor.manager.cancel(drop)
    assert executor.join() == 1
    assert calls == ["add 1+1"]
    assert conveyor.manager.get(drop).state is Status.CANCELLED
    assert conveyor.manager.get(keep).state is Status.SUCCESS


def test_a_retry_due_past_the_timeout_is_reported_not_waited_for(app: tuple[Conveyor, JoinableExecutor]) -> None:
    conveyor, executor = app
    conveyor.manager.submit_task("joinable.add", {"a": 1, "b": 1}, delay=60)
    with pytest.raises(TimeoutError, match="1 task"):
        executor.join(timeout=0.1)
