"""The local pool under faults: ``conveyor serve`` SIGKILLed mid-burst, and one tenant flooding the pool.

After the kill every accepted task ends with one outcome, and its
``attempts`` is at least the number of times its body ran (counted by the
body itself, in a file): at-least-once execution, exactly-once outcome.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import httpx
import pytest

from conveyor import Settings, Status
from conveyor.records import FINAL_STATES
from conveyor.stores import open_store
from tests.acceptance.server import Server
from tests.conftest import AppFactory
from tests.faults.report import FaultReport, FaultRow, percentiles_ms
from tests.lanes_workload import executions

pytestmark = pytest.mark.slow

#: CONVEYOR_FAULT_SCALE=5 for the figures in docs/reliability.md
SCALE = float(os.environ.get("CONVEYOR_FAULT_SCALE", "1"))
WORKLOADS = "system,tests.lanes_workload"


def serve(folder: Path, database_url: str) -> Server:
    env = {
        "CONVEYOR_DATABASE_URL": database_url,
        "CONVEYOR_DATA_DIR": str(folder / "data"),
        "CONVEYOR_WORKLOADS": WORKLOADS,
        "CONVEYOR_SCHEDULER": "false",
        "CONVEYOR_CONCURRENCY": "2",
        "CONVEYOR_LEASE_SECONDS": "6",
        "CONVEYOR_TENANT_RATE": "0",
    }
    return Server(folder, env=env).start(timeout=60)


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_serve_killed_mid_burst_counts_every_execution_and_gives_each_task_one_outcome(
    store: str, tmp_path: Path, request: pytest.FixtureRequest, fault_report: FaultReport
) -> None:
    database_url = (
        f"sqlite:///{tmp_path / 'conveyor.db'}" if store == "sqlite" else request.getfixturevalue("clean_postgres_url")
    )
    marks = str(tmp_path / "executions")
    n = int(300 * SCALE)
    first = serve(tmp_path / "first", database_url)
    statuses: list[int] = []
    accepted: list[str] = []
    with httpx.Client(base_url=first.url, timeout=30) as client:
        for _ in range(n):
            reply = client.post("/api/v1/tasks", json={"task_type": "lanes.touch", "params": {"path": marks}})
            statuses.append(reply.status_code)
            if reply.status_code == 202:
                accepted.append(reply.json()["task_id"])
    # Mid-burst: a part has run, most is still waiting, handed out or being written.
    deadline = time.monotonic() + 30
    while sum(executions(marks).values()) < len(accepted) // 4:
        assert time.monotonic() < deadline, "the burst did not start"
        time.sleep(0.01)
    first.kill(signal.SIGKILL)
    killed_at = time.monotonic()
    second = serve(tmp_path / "second", database_url)
    s = open_store(Settings(database_url=database_url).resolved_database_url)
    s.open()
    try:
        deadline = time.monotonic() + 45
        while True:
            records = s.get_many(accepted)
            if all(r.state in FINAL_STATES for r in records):
                break
            assert time.monotonic() < deadline, sum(r.state not in FINAL_STATES for r in records)
            time.sleep(0.2)
        recovery = time.monotonic() - killed_at
        ran = executions(marks)
        outcomes = {r.id: [e.state for e in s.events(r.id) if e.state in FINAL_STATES] for r in records}
    finally:
        s.close()
        second.kill(signal.SIGKILL)
    under_counted = [r.id for r in records if r.attempts < ran.get(r.id, 0)]
    completed_once = sum(1 for r in records if r.state is Status.SUCCESS and len(outcomes[r.id]) == 1)
    row = fault_report.add(
        FaultRow(
            fault="SIGKILL of `conveyor serve` mid-burst, then restart",
            setup=f"local executor, {store} store",
            submitted=n,
            accepted=len(accepted),
            completed_once=completed_once,
            lost=sum(1 for r in records if r.state is not Status.SUCCESS),
            max_executions=max(ran.values(), default=0),
            recovery_s=round(recovery, 2),
            notes=f"ran twice: {sum(1 for c in ran.values() if c > 1)}; attempts under-counted: {len(under_counted)}",
        ).count_statuses(statuses)
    )
    assert row.server_errors == 0
    assert len(accepted) == n
    assert row.lost == 0
    assert completed_once == len(accepted)
    assert under_counted == [], f"attempts below the executions counted for {len(under_counted)} tasks"
    assert all(ran.get(r.id, 0) >= 1 for r in records)


FLOOD_TASK_S = 0.02


@pytest.mark.parametrize("tenant_max_workers", [0, 1], ids=["fair-line", "one-worker-per-tenant"])
def test_a_flooding_tenant_does_not_make_another_wait_for_its_backlog(
    make_app: AppFactory, tmp_path: Path, fault_report: FaultReport, tenant_max_workers: int
) -> None:
    app = make_app(concurrency=2, workloads=WORKLOADS, tenant_rate=0, tenant_max_workers=tenant_max_workers)
    m = app.manager
    marks = str(tmp_path / "marks")
    # Pings arrive at random moments, as independent clients' do: one sent the moment the last
    # one ended would always land just after a worker took a flood task, and wait for all of it.
    arrivals = random.Random(7)

    def ping_latency() -> float:
        time.sleep(arrivals.uniform(0, 1.25 * FLOOD_TASK_S))
        started = time.monotonic()
        task_id = m.submit("system.ping", tenant="quiet")
        assert m.wait(task_id, timeout=60).state is Status.SUCCESS
        return time.monotonic() - started

    pings = int(200 * SCALE)
    ping_latency()  # the workers' first task
    baseline = [ping_latency() for _ in range(pings)]
    flood = [
        m.submit("lanes.touch", path=marks, seconds=FLOOD_TASK_S, tenant="flood") for _ in range(int(1000 * SCALE))
    ]
    during = [ping_latency() for _ in range(pings)]
    backlog_left = sum(1 for r in m.store.get_many(flood) if r.state not in FINAL_STATES)
    for task_id in flood:
        assert m.wait(task_id, timeout=120).state is Status.SUCCESS
    base50, base99 = percentiles_ms(baseline)
    p50, p99 = percentiles_ms(during)
    capped = f", CONVEYOR_TENANT_MAX_WORKERS={tenant_max_workers}" if tenant_max_workers else ""
    fault_report.add(
        FaultRow(
            fault=f"one tenant floods the local pool ({len(flood)} tasks of 20 ms) while another pings",
            setup=f"local executor, sqlite store, 2 worker processes{capped}",
            submitted=len(flood) + 2 * pings + 1,
            accepted=len(flood) + 2 * pings + 1,
            completed_once=len(flood) + 2 * pings + 1,
            lost=0,
            other_tenant_p50_ms=round(p50, 1),
            other_tenant_p99_ms=round(p99, 1),
            baseline_p50_ms=round(base50, 1),
            baseline_p99_ms=round(base99, 1),
            # Both workers busy with the flood: a ping waits for one of them to end its task.
            allowance_ms=0.0 if tenant_max_workers else FLOOD_TASK_S * 1000,
            notes=f"{pings} pings per phase at random moments; flood backlog left after the last ping: {backlog_left}",
        )
    )
    # Every ping was served while the flood still had work waiting: none queued behind it.
    assert backlog_left > 0
