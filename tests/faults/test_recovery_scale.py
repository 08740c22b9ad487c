"""A pool SIGKILLed with a backlog queued: the next pool takes the whole backlog back at once and runs each task once.

The first pool (a child process, like ``conveyor serve``) submits
2,000 tasks (times ``CONVEYOR_FAULT_SCALE``) and is killed, its worker
processes with it, while nearly all of them still wait. A new pool on the same
database must claim every one of them in its first recovery round (it used to
take back one page of 1,000 per half lease), and run each task exactly once;
only a task that had started before the kill may run a second time.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conveyor import Status, TaskQuery
from conveyor.executors.local import LocalExecutor
from conveyor.records import FINAL_STATES
from tests.conftest import AppFactory
from tests.faults.report import FaultReport, FaultRow, fault_scale

pytestmark = [pytest.mark.slow]

#: the backlog: 2,000 tasks, times CONVEYOR_FAULT_SCALE (it once read the variable as the count itself)
SCALE = 2000 * fault_scale()
REPO = Path(__file__).resolve().parents[2]


def _all(app: object, states: list[Status]) -> list[object]:
    store = app.store  # type: ignore[attr-defined]
    page = store.query(TaskQuery(states=states, limit=10**7))
    return list(page.items)


def test_a_restarted_pool_takes_back_a_killed_pools_whole_backlog_and_runs_each_task_once(
    make_app: AppFactory, sql_database_url: str, tmp_path: Path, fault_report: FaultReport
) -> None:
    marks = tmp_path / "marks.txt"
    # 10 ms a task: slow enough that nearly all of them still wait at the kill.
    argv = [sys.executable, "-m", "tests.faults.pool_child", sql_database_url, str(tmp_path / "first")]
    child = subprocess.Popen(
        [*argv, str(SCALE), str(marks), "0.01"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "queued"
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the pool and its worker processes, without warning
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    killed_at = time.monotonic()
    # Started before the kill (a line written): may run again, as any task in flight when its worker dies.
    started_before_kill = set(marks.read_text().split()) if marks.exists() else set()

    app = make_app(
        database_url=sql_database_url,
        workloads=["system", "tests.faults.recovery_workload"],
        max_unfinished_per_tenant=10**7,
        lease_seconds=30.0,
    )
    pool = app.executor
    assert isinstance(pool, LocalExecutor)
    # The first recovery round ends by scheduling the next one; wait for that.
    deadline = time.monotonic() + 30
    while pool._next_recover == 0.0:
        assert time.monotonic() < deadline, "the first recovery round did not finish"
        time.sleep(0.05)
    left_behind = [r for r in _all(app, [Status.PENDING, Status.PROCESSING]) if r.worker != pool.worker_id]  # type: ignore[attr-defined]
    assert left_behind == [], f"{len(left_behind)} tasks still held by the dead pool after the first recovery round"

    # Let the restarted pool finish the backlog; the test's own timeout bounds it.
    for r in _all(app, [Status.PENDING, Status.PROCESSING]):
        app.manager.wait(r.id, timeout=120)  # type: ignore[attr-defined]
    recovery_s = time.monotonic() - killed_at

    records = _all(app, list(Status))
    runs = collections.Counter(marks.read_text().split())
    successes = [r for r in records if r.state is Status.SUCCESS]  # type: ignore[attr-defined]
    lost = SCALE - len(successes)
    twice = {task_id for task_id, n in runs.items() if n > 1}
    # A body may run twice (at-least-once); its outcome is on the timeline once.
    finals = {
        r.id: [e.state for e in app.store.events(r.id) if e.state in FINAL_STATES]  # type: ignore[attr-defined]
        for r in records
    }
    completed_once = sum(1 for r in records if r.state is Status.SUCCESS and len(finals[r.id]) == 1)  # type: ignore[attr-defined]
    fault_report.add(
        FaultRow(
            fault="SIGKILL of a local pool with its backlog queued, then a new pool",
            setup=f"local pool, {app.store.kind} store",
            submitted=SCALE,
            accepted=len(records),
            completed_once=completed_once,
            lost=lost,
            max_executions=max(runs.values()),
            recovery_s=round(recovery_s, 2),
            notes=f"{len(started_before_kill)} started before the kill, {len(twice)} of them ran again",
        )
    )
    assert len(records) == SCALE
    assert lost == 0
    assert set(runs) == {r.id for r in records}  # type: ignore[attr-defined]
    assert twice <= started_before_kill, "a task that had not started at the kill ran twice"
    assert max(runs.values()) <= 2
    assert completed_once == len(records), f"{len(records) - completed_once} tasks without exactly one outcome"
