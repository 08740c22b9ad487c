"""A dependency that hangs (SIGSTOP: it accepts connections and answers nothing) must not stall the API.

Every call to it has a deadline: while it hangs, requests that need it answer
503 with ``Retry-After`` naming it, within the deadline, and requests that do
not need it keep answering; ``/health`` answers within its own deadline and
reports it down. After SIGCONT everything accepted completes, each task's
body having run exactly once (counted by the task itself, in a file).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conveyor import Conveyor, Status
from conveyor.api.main import create_app
from tests.conftest import AppFactory, CeleryWorkers
from tests.counted_workload import executions
from tests.faults.report import FaultReport, FaultRow, percentiles_ms
from tests.faults.services import PrivatePostgres, PrivateRedis

pytestmark = pytest.mark.slow

SCALE = float(os.environ.get("CONVEYOR_FAULT_SCALE", "1"))
HANG_S = 8.0 * SCALE  # longer than the 6 s lease: a lease renewed before the hang lapses during it
#: tight deadlines, and the most a request may take while a dependency hangs: a statement's round
#: trip and a reconnect (a broker send: two tries of its socket timeout), plus slack for a loaded machine
DEADLINES = {
    "store_statement_timeout": 1.5,
    "store_lock_timeout": 1.0,
    "store_pool_timeout": 1.0,
    "store_connect_timeout": 2.0,
    "broker_timeout": 1.5,
    "health_timeout": 2.0,
}
ANSWER_WITHIN_S = 8.0
KEYS = {"key-a": "tenant-a", "key-b": "tenant-b"}


def postgres_pids(pg: PrivatePostgres) -> list[int]:
    """The postmaster and every backend it forked (all of them must stop for the server to hang)."""
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            ppid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:"))
            if ppid == postmaster:
                children.append(int(entry.name))
    return [postmaster, *children]


@contextmanager
def hung(pids: Callable[[], list[int]]) -> Iterator[None]:
    """SIGSTOP every process `pids` names, until a fresh look names no new one.

    A server may fork a child (a PostgreSQL backend for a new connection) between
    the listing and the stop; that child would go on answering, and the hang the
    test means to meet would not be there.
    """
    stopped: list[int] = []
    while fresh := [pid for pid in pids() if pid not in stopped]:
        for pid in fresh:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            stopped.append(pid)
    try:
        yield
    finally:
        for pid in stopped:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@dataclass
class Load:
    """Tenant A submits from a few threads; tenant B reads its own task's status from others."""

    client: TestClient
    submit: dict[str, Any]
    b_task: str
    accepted: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    submits: int = 0
    b_statuses: list[int] = field(default_factory=list)
    slowest_s: float = 0.0
    slowest: str = ""
    bad: list[str] = field(default_factory=list)
    b_latencies: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, started: float, response: Any) -> None:
        took = time.monotonic() - started
        with self.lock:
            self.statuses.append(response.status_code)
            if took > self.slowest_s:
                self.slowest_s = took
                self.slowest = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
            if response.status_code == 503:
                body = response.json()["error"]
                if "retry-after" not in response.headers or not body.get("details", {}).get("dependency"):
                    self.bad.append(f"503 without Retry-After or dependency: {response.headers} {body}")
            elif response.status_code >= 400:
                self.bad.append(f"{response.status_code}: {response.text[:300]}")

    def _submitter(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            r = self.client.post("/api/v1/tasks", json=self.submit, headers={"X-API-Key": "key-a"})
            self._record(started, r)
            with self.lock:
                self.submits += 1
                if r.status_code == 202:
                    self.accepted.append(r.json()["task_id"])
            time.sleep(0.05)

    def _reader(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            r = self.client.get(f"/api/v1/tasks/{self.b_task}", headers={"X-API-Key": "key-b"})
            self._record(started, r)
            with self.lock:
                self.b_latencies.append(time.monotonic() - started)
                self.b_statuses.append(r.status_code)
            time.sleep(0.05)

    @contextmanager
    def running(self, submitters: int = 3, readers: int = 2) -> Iterator[Load]:
        threads = [threading.Thread(target=self._submitter) for _ in range(submitters)]
        threads += [threading.Thread(target=self._reader) for _ in range(readers)]
        for t in threads:
            t.start()
        try:
            yield self
        finally:
            self.stop.set()
            for t in threads:
                t.join(30)


def health_within_deadline(client: TestClient, part: str) -> None:
    started = time.monotonic()
    r = client.get("/health")
    took = time.monotonic() - started
    assert took < DEADLINES["health_timeout"] + 1.5, f"/health took {took:.1f}s"
    assert r.status_code == 503, r.text
    assert r.json()[part]["status"] == "down", r.json()


def wait_healthy(client: TestClient, timeout: float = 40) -> float:
    started = time.monotonic()
    while client.get("/health").status_code != 200:
        assert time.monotonic() - started < timeout, client.get("/health").json()
        time.sleep(0.2)
    return time.monotonic() - started


def wait_finished(app: Conveyor, ids: list[str], timeout: float = 60) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        records = app.store.get_many(ids)
        if len(records) == len(ids) and all(r.finished for r in records):
            return records
        assert time.monotonic() < deadline, Counter(r.state.value for r in records)
        time.sleep(0.2)


def hang_under_load(
    app: Conveyor,
    *,
    pids: Callable[[], list[int]],
    part: str,
    submit: dict[str, Any],
    log: Path | None,
    fault: str,
    setup: str,
    fault_report: FaultReport,
    b_reads_need_the_dependency: bool = True,
) -> FaultRow:
    """Run tenant A's submits and tenant B's reads across a hang of the dependency; check and report."""
    with TestClient(create_app(app, scheduler=False)) as client:
        b = client.post("/api/v1/tasks", json=submit, headers={"X-API-Key": "key-b"})
        assert b.status_code == 202, b.text
        load = Load(client, submit, b.json()["task_id"])
        with load.running():
            time.sleep(1.5)
            before = len(load.b_latencies)
            with hung(pids):
                time.sleep(0.5)
                health_within_deadline(client, part)
                time.sleep(max(0.0, HANG_S - 0.5 - DEADLINES["health_timeout"]))
            resumed = time.monotonic()
            time.sleep(1.0)
        during = load.b_latencies[before:]
        b_during = load.b_statuses[before:]
        wait_healthy(client)
        accepted = list(load.accepted)
        records = wait_finished(app, [*accepted, load.b_task])
        recovery_s = time.monotonic() - resumed
        runs = executions(log) if log is not None else Counter()
        p50, p99 = percentiles_ms(during)
        succeeded = {r.id for r in records if r.state is Status.SUCCESS}
        row = FaultRow(
            fault=fault,
            setup=setup,
            submitted=load.submits,
            accepted=len(accepted),
            completed_once=sum(1 for i in accepted if (runs[i] == 1 if log is not None else i in succeeded)),
            lost=sum(1 for r in records if not r.finished),
            max_executions=max((runs[i] for i in accepted), default=0) if log is not None else None,
            recovery_s=round(recovery_s, 2),
            other_tenant_p50_ms=round(p50, 1),
            other_tenant_p99_ms=round(p99, 1),
            notes=f"hung {HANG_S:g}s; slowest answer {load.slowest_s:.2f}s ({load.slowest}); deadlines {DEADLINES}",
        ).count_statuses(load.statuses)
        fault_report.add(row)
        assert not load.bad, load.bad[:5]
        assert row.server_errors == 0, row.http_statuses
        assert "503" in row.http_statuses, row.http_statuses  # the hang was met, and answered
        assert load.slowest_s < ANSWER_WITHIN_S, f"an answer took {load.slowest_s:.1f}s"
        assert len(during) >= 2 * HANG_S / ANSWER_WITHIN_S, "tenant B's reads stalled"  # two readers, answered
        if not b_reads_need_the_dependency:
            assert set(b_during) == {200}, Counter(b_during)
        assert row.lost == 0
        assert [r.state for r in records] == [Status.SUCCESS] * len(records)
        if log is not None:
            assert {runs[i] for i in accepted} == {1}, Counter(runs[i] for i in accepted)
        return row


@pytest.mark.postgres
def test_a_hung_postgresql_answers_503_within_the_deadline_and_runs_every_accepted_task_once(
    make_app: AppFactory, tmp_path: Path, fault_report: FaultReport
) -> None:
    pg = PrivatePostgres().init()
    pg.start()
    try:
        log = tmp_path / "executions.log"
        app = make_app(
            start=False,
            database_url=pg.url,
            api_keys=KEYS,
            lease_seconds=6,
            tenant_rate=0,
            workloads="system",
            **DEADLINES,
        )
        hang_under_load(
            app,
            pids=lambda: postgres_pids(pg),
            part="database",
            submit={"task_type": "tests.counted", "params": {"log": str(log)}},
            log=log,
            fault=f"PostgreSQL hung (SIGSTOP) {HANG_S:g}s under load from two tenants",
            setup="local executor, postgres store",
            fault_report=fault_report,
        )
    finally:
        pg.remove()


@pytest.mark.redis
def test_a_hung_redis_store_answers_503_within_the_deadline_and_runs_every_accepted_task_once(
    make_app: AppFactory, tmp_path: Path, fault_report: FaultReport
) -> None:
    redis = PrivateRedis(tmp_path / "redis").start()
    try:
        log = tmp_path / "executions.log"
        app = make_app(
            start=False,
            database_url=redis.url,
            api_keys=KEYS,
            lease_seconds=6,
            tenant_rate=0,
            workloads="system",
            **DEADLINES,
        )
        assert redis.process is not None
        pid = redis.process.pid
        hang_under_load(
            app,
            pids=lambda: [pid],
            part="database",
            submit={"task_type": "tests.counted", "params": {"log": str(log)}},
            log=log,
            fault=f"Redis store hung (SIGSTOP) {HANG_S:g}s under load from two tenants",
            setup="local executor, redis store",
            fault_report=fault_report,
        )
    finally:
        redis.stop()


@pytest.mark.redis
def test_a_hung_redis_broker_answers_503_within_the_deadline_and_other_reads_go_on(
    make_app: AppFactory, tmp_path: Path, private_workers: CeleryWorkers, fault_report: FaultReport
) -> None:
    redis = PrivateRedis(tmp_path / "broker").start()
    try:
        database = f"sqlite:///{tmp_path / 'store.db'}"
        private_workers.start(redis.url, database, concurrency=2, name="hung-broker")
        app = make_app(
            start=False,
            database_url=database,
            executor="celery",
            broker_url=redis.url,
            api_keys=KEYS,
            tenant_rate=0,
            workloads="system",
            **DEADLINES,
        )
        assert redis.process is not None
        pid = redis.process.pid
        row = hang_under_load(
            app,
            pids=lambda: [pid],
            part="executor",
            submit={"task_type": "system.ping"},
            log=None,
            fault=f"Redis broker hung (SIGSTOP) {HANG_S:g}s under load from two tenants",
            setup="celery executor, redis broker, sqlite store",
            fault_report=fault_report,
            b_reads_need_the_dependency=False,
        )
        assert row.accepted
    finally:
        redis.stop()
