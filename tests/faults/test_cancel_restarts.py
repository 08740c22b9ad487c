"""Cancels across crashes: a task cancelled while queued never runs, through SIGKILLs and restarts of ``serve``.

Two long tasks hold both slots of the local pool while the others queue;
every other queued task is cancelled, ``conveyor serve`` is SIGKILLed and
restarted, more are cancelled, it is killed and restarted again. At the end
each cancelled task is CANCELLED with no execution on its timeline, and
every other task ran to SUCCESS and has one outcome.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.acceptance.server import Server
from tests.faults.figures import served_store, store_figures
from tests.faults.report import FaultReport, FaultRow, fault_scale

pytestmark = pytest.mark.slow

#: a short lease, so that the restarted server adopts the killed one's running tasks within seconds;
#: prefetch 1, so a worker busy with a long task holds no other (a held task is PROCESSING, and its
#: cancel answers "cancellation requested": see test_local_lanes for that case)
ENV = {"CONVEYOR_LEASE_SECONDS": "3", "CONVEYOR_PREFETCH": "1"}
LONG = {"task_type": "system.sleep", "params": {"seconds": 4, "steps": 4}}
SHORT = {"task_type": "system.sleep", "params": {"seconds": 0.05, "steps": 1}}


def wait_running(client: httpx.Client, ids: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not all(client.get(f"/api/v1/tasks/{i}").json()["status"] == "PROCESSING" for i in ids):
        assert time.monotonic() < deadline, "the long tasks never started"
        time.sleep(0.05)


def cancel(client: httpx.Client, ids: list[str], statuses: list[int]) -> list[str]:
    """Cancel each of ``ids``; the ones answered CANCELLED (a queued task is cancelled at once)."""
    cancelled = []
    for task_id in ids:
        r = client.post(f"/api/v1/tasks/{task_id}/cancel/")
        statuses.append(r.status_code)
        if r.status_code == 200 and r.json()["status"] == "CANCELLED":
            cancelled.append(task_id)
    return cancelled


def test_tasks_cancelled_while_queued_never_run_across_sigkills_and_restarts(
    tmp_path: Path, fault_report: FaultReport
) -> None:
    queued_count = 40 * fault_scale()
    statuses: list[int] = []
    server = Server(tmp_path, env=ENV).start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        submits = [client.post("/api/v1/tasks", json=LONG) for _ in range(2)]
        submits += [client.post("/api/v1/tasks", json=SHORT) for _ in range(queued_count)]
        statuses += [r.status_code for r in submits]
        ids = [r.json()["task_id"] for r in submits]
        long_ids, queued = ids[:2], ids[2:]
        wait_running(client, long_ids)
        cancelled = cancel(client, queued[::4], statuses)  # while both slots are busy: at once
    server.kill(signal.SIGKILL)

    killed = time.monotonic()
    server = Server(tmp_path, port=server.port, env=ENV).start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        wait_running(client, long_ids)  # adopted again; the short ones still wait behind them
        cancelled += cancel(client, queued[2::4], statuses)
    server.kill(signal.SIGKILL)

    server = Server(tmp_path, port=server.port, env=ENV).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                records = [client.get(f"/api/v1/tasks/{i}").json() for i in ids]
                statuses += [200] * len(ids)
                if all(r["status"] in ("SUCCESS", "FAILURE", "CANCELLED") for r in records):
                    break
                assert time.monotonic() < deadline, [r["status"] for r in records]
                time.sleep(0.3)
            recovery = time.monotonic() - killed
    finally:
        server.stop()

    with served_store(tmp_path) as store:
        figures = store_figures(store, ids)
        ran = {i for i in ids if any(e.kind == "state" and e.state.value == "PROCESSING" for e in store.events(i))}
        final = {r.id: r.state.value for r in store.get_many(ids)}
    cancelled_ran = sorted(set(cancelled) & ran)
    others = [i for i in ids if i not in set(cancelled)]
    row = fault_report.add(
        FaultRow(
            fault="cancels of queued tasks across two SIGKILLs and restarts of serve",
            setup="conveyor serve (subprocess), local pool of 2, SQLite",
            submitted=len(ids),
            accepted=len(ids),
            recovery_s=recovery,
            notes=(
                f"{len(cancelled)} cancelled while queued (half before the first kill, half after the restart): "
                f"{len(cancelled_ran)} of them ran; {len(others)} others all SUCCESS; recovery is from the first "
                "kill to every task final, through the second kill"
            ),
            **figures,
        ).count_statuses(statuses)
    )
    assert len(cancelled) == len(queued[::4]) + len(queued[2::4])  # each cancel of a queued task is at once
    assert cancelled_ran == []  # a cancelled task never runs, whatever restarts in between
    assert {final[i] for i in cancelled} == {"CANCELLED"}
    assert {final[i] for i in others} == {"SUCCESS"}
    assert row.completed_once == row.accepted
    assert row.lost == 0
    assert row.server_errors == 0
