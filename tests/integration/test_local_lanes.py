"""The local pool's lanes and turns: queues do not wait for each other, tenants do not wait for a flood,
and a cancel answer never says CANCELLED for a body that ran."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from conveyor import Status
from conveyor.errors import InvalidTransition
from conveyor.executors.local.lanes import FairLine, lane_sizes
from tests.conftest import AppFactory
from tests.lanes_workload import executions

WORKLOADS = "system,tests.lanes_workload"


def test_the_default_layout_gives_every_declared_queue_a_lane_of_its_own() -> None:
    assert lane_sizes({}, ["default", "documents", "documents", "media"], 3) == {
        "default": 3,
        "documents": 1,
        "media": 1,
    }
    # Configured: exactly those lanes, default at the concurrency unless listed.
    assert lane_sizes({"documents": 2}, ["default", "documents", "media"], 4) == {"documents": 2, "default": 4}
    assert lane_sizes({"default": 1, "media": 3}, ["speech"], 4) == {"default": 1, "media": 3}


def test_tenants_take_turns_and_each_tenants_priority_still_counts() -> None:
    line = FairLine()
    for i in range(5):
        line.push("flood", 0, i, f"a{i}")
    line.push("quiet", 0, 10, "b0")
    line.push("quiet", 5, 11, "b-urgent")
    line.push("flood", 9, 12, "a-urgent")
    order = [line.pop() for _ in range(len(line))]
    assert order[:4] == ["a-urgent", "b-urgent", "a0", "b0"]
    assert order[4:] == ["a1", "a2", "a3", "a4"]
    assert line.pop() is None


def test_a_tenant_with_nothing_in_line_goes_before_the_tenants_taking_turns() -> None:
    line = FairLine()
    for i in range(3):
        line.push("flood", 0, i, f"a{i}")
    assert line.pop() == "a0"  # the flood now takes turns
    line.push("quiet", 0, 10, "b0")
    line.push("quiet", 0, 11, "b1")
    # The quiet tenant's first task goes first; then it takes its turn after the flood.
    assert [line.pop() for _ in range(len(line))] == ["b0", "a1", "b1", "a2"]


def test_a_tenant_at_its_share_of_the_lane_is_passed_over_and_keeps_its_place() -> None:
    line = FairLine()
    line.push("flood", 0, 0, "a0")
    line.push("flood", 0, 1, "a1")
    line.push("quiet", 0, 2, "b0")
    assert line.pop(blocked={"flood"}) == "b0"
    assert line.pop(blocked={"flood"}) is None
    assert [line.pop(), line.pop(), line.pop()] == ["a0", "a1", None]


def _started_in_order(m: object, task_ids: list[str]) -> list[str]:
    return sorted(task_ids, key=lambda task_id: m.get(task_id).result)  # type: ignore[attr-defined]


def _until_started(marks: str, task_id: str) -> None:
    """Until ``task_id``'s body has begun (its line in ``marks``)."""
    deadline = time.monotonic() + 30
    while task_id not in executions(marks):
        assert time.monotonic() < deadline, f"{task_id} did not start"
        time.sleep(0.01)


@pytest.mark.parametrize("pings_before", [0, 40], ids=["one-kind", "after-many-short-tasks"])
def test_a_busy_worker_is_handed_its_next_task_just_before_it_is_free(
    make_app: AppFactory, tmp_path: Path, pings_before: int
) -> None:
    """A task another tenant submits while a flood task runs is the next one to start, not the one after.

    After many short tasks the lane's average run is below a start write; the long task's own
    average still says when it ends.
    """
    app = make_app(concurrency=1, prefetch=2, workloads=WORKLOADS)
    m = app.manager
    marks = str(tmp_path / "marks")
    for _ in range(pings_before):
        assert m.wait(m.submit("system.ping"), timeout=30).state is Status.SUCCESS
    flood = [m.submit("lanes.touch", path=marks, seconds=0.6, tenant="flood") for _ in range(3)]
    # The second flood task is running: its start was chosen when the first ended (one run of the
    # type taught the pool how long it takes; the third is chosen just before the second ends).
    _until_started(marks, flood[1])
    quiet = m.submit("lanes.touch", path=marks, seconds=0.0, tenant="quiet")
    for task_id in [*flood, quiet]:
        assert m.wait(task_id, timeout=30).state is Status.SUCCESS
    # Handed out when the second one started, the third would run before the quiet task.
    assert _started_in_order(m, [*flood, quiet]) == [flood[0], flood[1], quiet, flood[2]]


def test_a_tenant_holds_no_more_workers_than_its_share(make_app: AppFactory, tmp_path: Path) -> None:
    """``tenant_max_workers=1`` of 2: a flood of long tasks leaves a worker free for another tenant."""
    app = make_app(concurrency=2, tenant_max_workers=1, workloads=WORKLOADS)
    m = app.manager
    marks = str(tmp_path / "marks")
    flood = [m.submit("lanes.touch", path=marks, seconds=2.0, tenant="flood") for _ in range(4)]
    _until_started(marks, flood[0])
    quiet = m.submit("lanes.touch", path=marks, seconds=0.0, tenant="quiet")
    assert m.wait(quiet, timeout=30).state is Status.SUCCESS
    # Done while the flood's first task still runs, and no second flood task started beside it.
    assert [m.get(task_id).state for task_id in flood].count(Status.SUCCESS) == 0
    assert set(executions(marks)) == {flood[0], quiet}
    for task_id in flood:
        assert m.wait(task_id, timeout=30).state is Status.SUCCESS
    # One at a time: each flood task started after the one before it ended.
    starts = [m.get(task_id).result for task_id in flood]
    assert all(later - earlier >= 1.9 for earlier, later in itertools.pairwise(starts)), starts


def test_a_long_task_on_one_queue_does_not_hold_up_a_task_on_another(make_app: AppFactory) -> None:
    app = make_app(concurrency=1, workloads=WORKLOADS)
    m = app.manager
    sleepers = [m.submit("system.sleep", seconds=30, steps=30) for _ in range(2)]
    deadline = time.monotonic() + 20
    while m.get(sleepers[0]).state is not Status.PROCESSING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    other = m.submit("lanes.elsewhere")
    assert app.manager.wait(other, timeout=20).state is Status.SUCCESS
    # The default lane is still busy with the first sleeper; the second waits in line, to be handed
    # to the worker only just before the first ends.
    assert [m.get(s).state for s in sleepers] == [Status.PROCESSING, Status.PENDING]


def test_another_tenants_task_starts_after_the_tasks_already_handed_out_not_after_a_flood(
    make_app: AppFactory, tmp_path: Path
) -> None:
    concurrency, prefetch = 2, 2
    app = make_app(concurrency=concurrency, prefetch=prefetch, workloads=WORKLOADS)
    m = app.manager
    marks = str(tmp_path / "marks")
    flood = [m.submit("lanes.touch", path=marks, seconds=0.05, tenant="flood") for _ in range(200)]
    submitted = time.time()
    quiet = m.submit("lanes.touch", path=marks, seconds=0.05, tenant="quiet")
    assert m.wait(quiet, timeout=30).state is Status.SUCCESS
    quiet_started = m.get(quiet).result
    for task_id in flood:
        assert m.wait(task_id, timeout=60).state is Status.SUCCESS
    ahead = sum(1 for task_id in flood if submitted < m.get(task_id).result < quiet_started)
    # Started after it came in and before it: what the workers held (``prefetch`` each, or as many
    # as cover one start write) and a turn. Without turns it would be the whole backlog (~190).
    assert ahead <= 30, ahead


def test_a_cancel_answered_cancelled_means_the_body_never_ran(make_app: AppFactory, tmp_path: Path) -> None:
    """Cancels timed around the start of a prefetched task: CANCELLED only when its body did not run."""
    app = make_app(concurrency=1, prefetch=2, workloads=WORKLOADS)
    m = app.manager
    marks = str(tmp_path / "marks")
    answers: list[Status] = []
    finals: list[Status] = []
    trials = 48
    for i in range(trials):
        blocker = m.submit("lanes.touch", path=marks, seconds=0.03)
        target = m.submit("lanes.touch", path=marks, seconds=0.01)
        time.sleep(0.25 * i / trials)  # sweeps the moment the target becomes the running one (late on a loaded machine)
        try:
            answer = m.cancel(target).state
        except InvalidTransition:
            answer = Status.SUCCESS  # it had already finished
        answers.append(answer)
        final = m.wait(target, timeout=30)
        finals.append(final.state)
        m.wait(blocker, timeout=30)
        ran = executions(marks).get(target, 0)
        if answer is Status.CANCELLED or final.state is Status.CANCELLED:
            assert ran == 0, (i, answer, final.state, final.message)
        else:
            # "Cancellation requested" (PROCESSING), or too late: the body ran, and the record says so.
            assert answer in (Status.PROCESSING, Status.SUCCESS)
            assert (final.state, ran) == (Status.SUCCESS, 1), (i, answer, final.state)
    # Some cancels stopped the task before its body. (Whether the sweep also lands after a body ran
    # depends on the machine's speed; each trial above checks whichever side it met.)
    assert Status.CANCELLED in finals
