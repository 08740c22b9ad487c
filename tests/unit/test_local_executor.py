"""The local executor: worker processes, priorities, retries, limits, cancel, recovery."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from conveyor import Retry, Status, TaskContext, task
from conveyor.errors import InvalidTransition, QuotaExceeded, SoftTimeLimitExceeded
from tests.conftest import AppFactory


@task("tests.add")
def add(ctx: TaskContext, a: int, b: int) -> dict[str, int]:
    ctx.progress(50, "Adding")
    return {"sum": a + b}


@task("tests.async_add")
async def async_add(ctx: TaskContext, a: int, b: int) -> int:
    await asyncio.sleep(0.01)
    ctx.progress(60, "Awaited")
    return a + b


@task("tests.started_at")
def started_at(ctx: TaskContext, label: str) -> dict[str, object]:
    return {"label": label, "at": time.time()}


@task("tests.block")
def block(ctx: TaskContext, seconds: float = 1.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ctx.raise_if_cancelled()
        time.sleep(0.01)
    return "done"


@task("tests.flaky", max_retries=3, retry_backoff=0.05)
def flaky(ctx: TaskContext, succeed_on: int) -> int:
    if ctx.attempt < succeed_on:
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    return ctx.attempt


@task("tests.asks_retry", max_retries=1)
def asks_retry(ctx: TaskContext) -> int:
    if ctx.attempt == 1:
        raise Retry("not yet", countdown=0.05)
    return ctx.attempt


@task("tests.runaway", time_limit=1.0)
def runaway(ctx: TaskContext) -> None:
    while True:  # ignores cancellation and never sleeps: only a kill stops it
        pass


@task("tests.soft", soft_time_limit=0.2, time_limit=5)
def soft(ctx: TaskContext, clean_up: bool) -> str:
    try:
        time.sleep(3)
    except SoftTimeLimitExceeded:
        if clean_up:
            return "cleaned up"
        raise
    return "slept"


@task("tests.crash")
def crash(ctx: TaskContext) -> None:
    os._exit(3)


@task("tests.not_json")
def not_json(ctx: TaskContext) -> object:
    return {1, 2, 3}


@task("tests.count_runs")
def count_runs(ctx: TaskContext, path: str, seconds: float = 0.0) -> int:
    with open(path, "a") as f:
        f.write(ctx.task_id + "\n")
    time.sleep(seconds)
    return ctx.attempt


def test_a_task_reports_progress_and_its_result_is_stored(make_app: AppFactory) -> None:
    """The timeline shows start, the task's own progress and the end, in order."""
    app = make_app()
    record = app.manager.wait(app.manager.submit("tests.add", a=2, b=3), timeout=10)
    assert record.state is Status.SUCCESS
    assert record.result == {"sum": 5}
    assert record.progress == 100
    assert record.attempts == 1
    steps = [(e.state.value, e.message) for e in app.store.events(record.id)]
    assert steps == [("PROCESSING", "Started"), ("PROCESSING", "Adding"), ("SUCCESS", "Completed")]


def test_async_task_functions_run_too(make_app: AppFactory) -> None:
    app = make_app()
    record = app.manager.wait(app.manager.submit("tests.async_add", 4, 5), timeout=10)
    assert record.state is Status.SUCCESS
    assert record.result == 9


def test_higher_priority_tasks_run_first(make_app: AppFactory) -> None:
    """With the one worker busy, a priority-9 task submitted last runs before priority-0 ones."""
    app = make_app(concurrency=1, prefetch=1)
    m = app.manager
    blocker = m.submit("tests.block", seconds=0.5)
    low = [m.submit("tests.started_at", label=f"low{i}", priority=0) for i in range(3)]
    high = m.submit("tests.started_at", label="high", priority=9)
    for task_id in [blocker, *low, high]:
        m.wait(task_id, timeout=10)
    high_at = m.get(high).result["at"]
    assert all(high_at < m.get(t).result["at"] for t in low)


def test_a_failing_task_is_retried_with_backoff_until_it_succeeds(make_app: AppFactory) -> None:
    app = make_app()
    record = app.manager.wait(app.manager.submit("tests.flaky", succeed_on=3), timeout=10)
    assert record.state is Status.SUCCESS
    assert record.result == 3
    assert record.attempts == 3
    states = [e.state.value for e in app.store.events(record.id) if e.kind == "state"]
    assert states == ["PROCESSING", "RETRY", "PROCESSING", "RETRY", "PROCESSING", "SUCCESS"]


def test_retries_run_out_and_the_task_fails_with_the_last_error(make_app: AppFactory) -> None:
    app = make_app()
    record = app.manager.wait(app.manager.submit("tests.flaky", succeed_on=10), timeout=10)
    assert record.state is Status.FAILURE
    assert record.attempts == 4  # the first run and three retries
    assert record.error is not None
    assert record.error["type"] == "ConnectionError"
    assert "attempt 4 failed" in record.error["message"]
    assert "Traceback" in record.error["traceback"]


def test_a_task_can_ask_to_be_retried(make_app: AppFactory) -> None:
    app = make_app()
    record = app.manager.wait(app.manager.submit("tests.asks_retry"), timeout=10)
    assert (record.state, record.result) == (Status.SUCCESS, 2)


def test_a_task_over_its_hard_time_limit_is_killed_and_the_pool_keeps_serving(make_app: AppFactory) -> None:
    app = make_app(concurrency=1)
    m = app.manager
    stuck = m.submit("tests.runaway")
    after = m.submit("tests.add", a=1, b=1)
    record = m.wait(stuck, timeout=15)
    assert record.state is Status.FAILURE
    assert record.error is not None
    assert "hard time limit of 1s exceeded" in record.message
    assert record.error["type"] == "TimeLimitExceeded"
    assert m.wait(after, timeout=10).state is Status.SUCCESS
    assert app.executor.stats()["worker_restarts"] == 1


def test_the_soft_time_limit_raises_inside_the_task(make_app: AppFactory) -> None:
    app = make_app()
    cleaned = app.manager.wait(app.manager.submit("tests.soft", clean_up=True), timeout=10)
    assert (cleaned.state, cleaned.result) == (Status.SUCCESS, "cleaned up")
    failed = app.manager.wait(app.manager.submit("tests.soft", clean_up=False), timeout=10)
    assert failed.state is Status.FAILURE
    assert "soft time limit of 0.2s exceeded" in failed.message


def test_a_waiting_task_is_cancelled_at_once(make_app: AppFactory) -> None:
    app = make_app(concurrency=1, prefetch=1)
    m = app.manager
    blocker = m.submit("tests.block", seconds=1)
    waiting = m.submit("tests.add", a=1, b=2)
    record = m.cancel(waiting)
    assert record.state is Status.CANCELLED
    # Once the blocker has finished, its slot is free: the cancelled task must not run in it.
    assert m.wait(blocker, timeout=10).state is Status.SUCCESS
    app.writer.flush()
    after = m.get(waiting)
    assert after.state is Status.CANCELLED
    assert after.started_at is None
    assert after.attempts == 0


def test_a_running_task_stops_cooperatively_when_cancelled(make_app: AppFactory) -> None:
    app = make_app()
    m = app.manager
    task_id = m.submit("tests.block", seconds=30)
    deadline = time.monotonic() + 10
    while m.get(task_id).state is not Status.PROCESSING:
        assert time.monotonic() < deadline
        app.hub.wait(task_id, 0.1)
    m.cancel(task_id)
    record = m.wait(task_id, timeout=10)
    assert record.state is Status.CANCELLED
    with pytest.raises(InvalidTransition):
        m.cancel(task_id)


def test_a_failed_task_can_be_retried_under_the_same_id(make_app: AppFactory) -> None:
    app = make_app()
    m = app.manager
    task_id = m.submit("system.sleep", seconds=0, steps=1, fail=True)
    assert m.wait(task_id, timeout=10).state is Status.FAILURE
    with pytest.raises(InvalidTransition):
        m.retry(m.submit("tests.add", a=1, b=1))  # not failed (pending or running)
    m.retry(task_id)
    record = m.wait(task_id, timeout=10)
    assert record.state is Status.FAILURE
    assert record.attempts == 2


def test_a_worker_process_that_dies_fails_its_task_and_is_replaced(make_app: AppFactory) -> None:
    app = make_app(concurrency=1)
    m = app.manager
    record = m.wait(m.submit("tests.crash"), timeout=10)
    assert record.state is Status.FAILURE
    assert "worker process died (exit code 3)" in record.message
    assert m.wait(m.submit("tests.add", a=1, b=1), timeout=10).state is Status.SUCCESS


def test_a_result_that_is_not_json_fails_with_a_clear_message(make_app: AppFactory) -> None:
    app = make_app()
    record = app.manager.wait(app.manager.submit("tests.not_json"), timeout=10)
    assert record.state is Status.FAILURE
    assert "not JSON serializable" in record.message


def test_an_idempotency_key_returns_the_existing_task(make_app: AppFactory) -> None:
    app = make_app()
    first = app.manager.submit("tests.add", a=1, b=1, idempotency_key="order-42")
    again = app.manager.submit("tests.add", a=9, b=9, idempotency_key="order-42")
    assert first == again


def test_a_tenant_over_its_unfinished_cap_is_refused(make_app: AppFactory) -> None:
    app = make_app(max_unfinished_per_tenant=2, concurrency=1)
    m = app.manager
    m.submit("tests.block", seconds=2, tenant="t1")
    m.submit("tests.block", seconds=2, tenant="t1")
    with pytest.raises(QuotaExceeded) as info:
        m.submit("tests.block", tenant="t1")
    assert info.value.status_code == 429
    m.submit("tests.add", a=1, b=1, tenant="t2")  # others are not affected


def test_a_delayed_task_waits_its_turn(make_app: AppFactory) -> None:
    app = make_app()
    t0 = time.time()
    record = app.manager.wait(app.manager.submit("tests.started_at", label="late", delay=0.5), timeout=10)
    assert record.result["at"] - t0 >= 0.5


def test_tasks_left_by_a_stopped_pool_are_run_exactly_once_by_the_next(make_app: AppFactory, tmp_path: Path) -> None:
    """Queued and running tasks of a pool that died are taken back and run to completion once."""
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    runs = tmp_path / "runs.txt"
    first = make_app(database_url=db, concurrency=1, prefetch=1)
    ids = [first.manager.submit("tests.count_runs", path=str(runs), seconds=0.3) for _ in range(5)]
    deadline = time.monotonic() + 10
    # PROCESSING is written when the task is handed to its worker; the run
    # file shows the function itself has begun.
    while first.manager.get(ids[0]).state is not Status.PROCESSING or not runs.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.stop(graceful=False)  # the running one is interrupted, four never started
    second = make_app(database_url=db, concurrency=2)
    records = [second.manager.wait(i, timeout=20) for i in ids]
    assert all(r.state is Status.SUCCESS for r in records)
    assert records[0].attempts == 2  # interrupted once, then run again
    lines = runs.read_text().split()
    assert sorted(set(lines)) == sorted(ids)
    assert lines.count(ids[0]) == 2
    assert all(lines.count(i) == 1 for i in ids[1:])


@task("tests.block_marked")
def block_marked(ctx: TaskContext, marker: str, seconds: float) -> str:
    """``tests.block`` that says when its body has begun (PROCESSING is written just before the send)."""
    Path(marker).touch()
    return block(ctx, seconds)


def test_graceful_stop_waits_for_running_tasks(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app()
    marker = tmp_path / "running"
    task_id = app.manager.submit("tests.block_marked", marker=str(marker), seconds=0.5)
    deadline = time.monotonic() + 10
    while not marker.exists():  # the body runs: a stop now must wait for it
        assert time.monotonic() < deadline
        time.sleep(0.02)
    app.stop(graceful=True)
    app.start()
    assert app.manager.get(task_id).state is Status.SUCCESS


@pytest.mark.anyio
async def test_the_async_face_submits_and_waits(make_app: AppFactory) -> None:
    """Seed 002's style: ``await task_manager.submit(name, *args)`` then ``get_result``."""
    app = make_app()
    task_id = await app.manager.aio.submit("tests.add", 20, 22)
    record = await app.manager.aio.wait(task_id, timeout=10)
    assert record.result == {"sum": 42}
    assert (await app.manager.aio.get_result(task_id)).state is Status.SUCCESS


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
