"""Celery delivery holes: messages stranded in a dead worker, lost by the broker, and tasks that kill their process.

Each scenario runs real Celery workers (subprocesses) on a private broker —
a ``redis-server`` or a ``rabbitmq-server`` of the test's own — over a
PostgreSQL store, and records a reliability row. The reaper's interval and
the grace after which a waiting task is sent again are shortened so each
test stays well under a minute; ``CONVEYOR_FAULT_SCALE`` multiplies the
task counts for the big runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor import Conveyor, Status, TaskQuery
from conveyor.errors import ExecutorError
from conveyor.executors.base import MAX_REDELIVERIES
from conveyor.records import TaskRecord, new_task_id, now
from conveyor.stores import open_store
from tests.conftest import AppFactory, CeleryWorkers
from tests.faults.report import FaultReport, FaultRow
from tests.faults.services import PrivateRabbitMQ, PrivateRedis

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SCALE = max(1, int(os.environ.get("CONVEYOR_FAULT_SCALE", "1")))
WORKLOADS = "system,tests.poison_workload"
#: shortened for the tests: a waiting task is sent again 3 s after it was due, checked every second
FAST = {"celery_pending_grace": 3.0, "celery_reap_interval": 1.0, "lease_seconds": 6.0}
REDIS_SETUP = "celery + private redis broker, postgres store, grace 3 s"


class Workers(CeleryWorkers):
    """The shared worker fixture's processes, with extra ``CONVEYOR_*`` settings of this test's choosing."""

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.extra: dict[str, str] = {}

    def env(self, broker_url: str, database_url: str, workloads: str | None = None) -> dict[str, str]:
        return {**super().env(broker_url, database_url, workloads), **self.extra}

    def kill(self, proc: Any) -> None:
        """SIGKILL of the worker and all its pool processes at once (a node lost, the OOM killer)."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    pool = Workers(tmp_path_factory.mktemp("delivery-workers"))
    yield pool
    pool.stop_all()


@pytest.fixture
def redis_broker(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def wait_until_finished(app: Conveyor, ids: list[str], timeout: float) -> float:
    """Seconds until every task finished; fails with the unfinished ones after ``timeout``."""
    start = time.monotonic()
    while True:
        records = app.store.get_many(ids)
        if len(records) == len(ids) and all(r.finished for r in records):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            waiting = [(r.id[-6:], r.state.value, r.attempts, r.message) for r in records if not r.finished]
            raise AssertionError(f"{len(waiting)} of {len(ids)} tasks unfinished after {timeout}s: {waiting[:5]}")
        time.sleep(0.2)


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def report_outcome(report: FaultReport, app: Conveyor, ids: list[str], since: float, **row: Any) -> FaultRow:
    """The row's figures from the store (one final state on each timeline, executions from the claims), kept."""
    records = app.store.get_many(ids)
    once = sum(
        1
        for r in records
        if r.finished and sum(1 for e in app.store.events(r.id) if e.kind == "state" and e.state.finished) == 1
    )
    row.setdefault("setup", REDIS_SETUP)
    return report.add(
        FaultRow(
            submitted=len(ids),
            accepted=len(ids),
            completed_once=once,
            lost=len(ids) - sum(1 for r in records if r.finished),
            max_executions=max((r.attempts for r in records), default=0),
            recovery_s=round(time.monotonic() - since, 1),
            **row,
        )
    )


def queue_a_backlog(make_app: AppFactory, database_url: str, broker_url: str) -> tuple[Conveyor, list[str]]:
    """An API with no reaper rounds of its own and ``20 * SCALE`` pings queued on the broker, none taken."""
    app = make_app(
        database_url=database_url,
        executor="celery",
        broker_url=broker_url,
        **{**FAST, "celery_reap_interval": 3600.0},
    )
    ids = [app.manager.submit("system.ping", payload=str(i)) for i in range(20 * SCALE)]
    assert app.executor.broker_depths()["default"] == len(ids)
    return app, ids


def assert_all_succeeded_once(app: Conveyor, ids: list[str], row: FaultRow) -> None:
    assert row.lost == 0
    assert row.completed_once == len(ids)
    assert all(r.state is Status.SUCCESS for r in app.store.get_many(ids))


# -- a worker dies holding messages (Redis broker) ---------------------------------------------------------


def test_delayed_tasks_held_by_a_killed_worker_run_soon_after_they_are_due(
    make_app: AppFactory,
    clean_postgres_url: str,
    redis_broker: PrivateRedis,
    workers: Workers,
    fault_report: FaultReport,
) -> None:
    """Countdown tasks sit unacknowledged in the worker that received them; it dies; they still run once."""
    victim = workers.start(redis_broker.url, clean_postgres_url, concurrency=1, name="victim")
    app = make_app(database_url=clean_postgres_url, executor="celery", broker_url=redis_broker.url, **FAST)
    n = 10 * SCALE
    ids = [app.manager.submit_task("system.ping", {"payload": str(i)}, delay=3).id for i in range(n)]
    # The worker takes delayed messages at once and keeps them until they are due.
    wait_for(lambda: app.executor.broker_depths().get("default") == 0, 20, "the worker to take every message")
    workers.kill(victim)
    killed = time.monotonic()
    workers.start(redis_broker.url, clean_postgres_url, concurrency=2, name="rescuer")
    wait_until_finished(app, ids, 45)
    row = report_outcome(
        fault_report, app, ids, killed, fault="SIGKILL of a Celery worker holding delayed (countdown) tasks"
    )
    assert_all_succeeded_once(app, ids, row)
    assert row.max_executions == 1


def test_prefetched_tasks_of_a_killed_worker_are_not_stranded(
    make_app: AppFactory,
    clean_postgres_url: str,
    redis_broker: PrivateRedis,
    workers: Workers,
    fault_report: FaultReport,
) -> None:
    """A worker busy with one task has reserved more (prefetch 8); killed, all of them still run, each once."""
    workers.extra = {"CONVEYOR_CELERY_PREFETCH": "8"}
    victim = workers.start(redis_broker.url, clean_postgres_url, concurrency=1, name="victim")
    app = make_app(database_url=clean_postgres_url, executor="celery", broker_url=redis_broker.url, **FAST)
    busy = app.manager.submit("system.sleep", seconds=30, steps=30)
    wait_for(lambda: app.manager.get(busy).state is Status.PROCESSING, 20, "the long task to start")
    n = 12 * SCALE
    queued = [app.manager.submit("system.ping", payload=str(i)) for i in range(n)]
    # Seven of them wait inside the worker, reserved behind the long task.
    wait_for(lambda: app.executor.broker_depths().get("default", 0) <= n - 7, 20, "the worker to reserve messages")
    workers.kill(victim)
    killed = time.monotonic()
    workers.extra = {}
    workers.start(redis_broker.url, clean_postgres_url, concurrency=2, name="rescuer")
    wait_until_finished(app, queued, 40)
    row = report_outcome(
        fault_report,
        app,
        queued,
        killed,
        fault="SIGKILL of a Celery worker holding prefetched tasks (prefetch 8)",
        notes="the task it was running is sent again when its lease lapses",
    )
    assert_all_succeeded_once(app, queued, row)
    assert row.max_executions == 1
    assert app.manager.get(busy).state in (Status.PROCESSING, Status.PENDING, Status.SUCCESS)


def test_a_backlog_lost_by_a_broker_restarted_without_its_data_is_sent_again(
    make_app: AppFactory,
    clean_postgres_url: str,
    redis_broker: PrivateRedis,
    workers: Workers,
    fault_report: FaultReport,
) -> None:
    """The store is the truth: accepted tasks whose messages the broker lost are overdue, reported, and sent again."""
    # No automatic reaper round here: the test looks at /health before it runs one.
    app, ids = queue_a_backlog(make_app, clean_postgres_url, redis_broker.url)
    n = len(ids)
    redis_broker.stop()
    shutil.rmtree(redis_broker.folder)  # the broker comes back empty, as from an old or missing snapshot
    redis_broker.start()
    restarted = time.monotonic()
    workers.start(redis_broker.url, clean_postgres_url, concurrency=2, name="after-restart")
    assert app.executor.broker_depths()["default"] == 0
    # Past the deadline by a whole grace, with nobody sending them: /health says so.
    wait_for(lambda: now() > max(r.expected_by or 0 for r in app.store.get_many(ids)) + 3.0, 20, "the deadlines")
    wait_for(lambda: app.executor.health()["workers_alive"] > 0, 20, "a live worker")
    health = app.health()
    assert health["executor"]["waiting"] == {"overdue": n, "stranded": n}
    assert health["overall_status"] == "degraded"
    assert app.executor.reap() == n
    wait_until_finished(app, ids, 30)
    row = report_outcome(
        fault_report,
        app,
        ids,
        restarted,
        fault="Redis broker restarted without its data, backlog queued",
        notes="/health degraded with the stranded count until the reaper sent them again",
    )
    assert_all_succeeded_once(app, ids, row)
    assert app.health()["executor"]["waiting"] == {"overdue": 0, "stranded": 0}


def test_a_task_stored_but_never_sent_runs_after_its_deadline(
    make_app: AppFactory, clean_postgres_url: str, redis_broker: PrivateRedis, workers: Workers
) -> None:
    """An API process that died between the insert and the send: the record's deadline gets it sent."""
    workers.start(redis_broker.url, clean_postgres_url, concurrency=1, name="steady")
    app = make_app(database_url=clean_postgres_url, executor="celery", broker_url=redis_broker.url, **FAST)
    t = now()
    # What submit writes before it sends, written here without the send.
    record = TaskRecord(
        id=new_task_id(),
        type="system.ping",
        executor="celery",
        params={"payload": "orphan"},
        created_at=t,
        updated_at=t,
        **app.executor.claim_fields("celery", due=t),
    )
    app.store.insert([record])
    wait_until_finished(app, [record.id], 30)
    done = app.manager.get(record.id)
    assert (done.state, done.attempts) == (Status.SUCCESS, 1)
    assert "Not started in time; sent again" in [e.message for e in app.store.events(record.id)]


# -- tasks that kill their process ------------------------------------------------------------------------


def test_a_task_that_kills_its_process_or_overstays_its_hard_limit_ends_failure_after_the_cap(
    make_app: AppFactory,
    clean_postgres_url: str,
    redis_broker: PrivateRedis,
    workers: Workers,
    fault_report: FaultReport,
) -> None:
    """As on the local pool: a death uses up a retry, a hard time limit fails at once; FAILURE names the cause."""
    workers.start(redis_broker.url, clean_postgres_url, concurrency=2, name="poisoned", workloads=WORKLOADS)
    app = make_app(
        database_url=clean_postgres_url,
        executor="celery",
        broker_url=redis_broker.url,
        workloads=["system", "tests.poison_workload"],
        **FAST,
    )
    started = time.monotonic()
    suicide = app.manager.submit("tests.kills_itself")
    overstay = app.manager.submit("tests.overstays")
    healthy = app.manager.submit("system.ping", payload="after the poison")
    wait_until_finished(app, [suicide, overstay, healthy], 40)
    died, slow, fine = (app.manager.get(i) for i in (suicide, overstay, healthy))
    row = report_outcome(
        fault_report,
        app,
        [suicide, overstay],
        started,
        fault="poison tasks: one kills its own process, one overstays its hard time limit",
        setup="celery prefork + private redis broker, postgres store",
        notes=f"attempts: kills-itself {died.attempts} (max_retries=1), overstays {slow.attempts}",
    )
    assert row.lost == 0
    assert row.completed_once == 2
    assert (died.state, died.attempts, died.error and died.error["type"]) == (Status.FAILURE, 2, "WorkerLost")
    assert died.message == "worker process died (signal 9 (SIGKILL)) on attempt 2; redelivery limit reached"
    assert (slow.state, slow.attempts, slow.error and slow.error["type"]) == (Status.FAILURE, 1, "TimeLimitExceeded")
    assert slow.message == "hard time limit (1s) exceeded on attempt 1"
    # (a PENDING step is a re-send of a message a loaded worker had not taken within the short grace)
    states = [e.state for e in app.store.events(suicide) if e.kind == "state" and e.state is not Status.PENDING]
    assert states == [Status.PROCESSING, Status.RETRY, Status.PROCESSING, Status.FAILURE]
    assert fine.state is Status.SUCCESS


def test_a_task_whose_whole_worker_keeps_dying_fails_at_the_redelivery_cap(
    make_app: AppFactory, clean_postgres_url: str, redis_broker: PrivateRedis
) -> None:
    """No main process left to say why: the reaper stops sending it after MAX_REDELIVERIES extra attempts."""
    app = make_app(
        database_url=clean_postgres_url,
        executor="celery",
        broker_url=redis_broker.url,
        **{**FAST, "celery_reap_interval": 3600.0},
    )
    t = now()
    dying = TaskRecord(
        id=new_task_id(),
        type="system.ping",
        executor="celery",
        state=Status.PROCESSING,
        attempts=1 + MAX_REDELIVERIES,
        worker="celery:gone:1:abc",
        lease_expires_at=t - 1,
    )
    once_more = dying.replace(id=new_task_id(), attempts=MAX_REDELIVERIES)
    app.store.insert([dying, once_more])
    assert app.executor.reap() == 1  # once_more is queued again, dying is not
    failed = app.manager.get(dying.id)
    assert (failed.state, failed.error and failed.error["type"]) == (Status.FAILURE, "WorkerLost")
    assert failed.message.endswith("redelivery limit reached")
    assert app.manager.get(once_more.id).state is Status.PENDING


# -- RabbitMQ -------------------------------------------------------------------------------------------------


RABBITMQ_SETUP = "celery + private rabbitmq-server, postgres store, publisher confirms"


@pytest.fixture
def rabbitmq(tmp_path: Path) -> Iterator[PrivateRabbitMQ]:
    server = PrivateRabbitMQ(tmp_path / "rabbitmq").start()
    yield server
    server.stop()


def test_on_rabbitmq_a_killed_workers_running_reserved_and_delayed_tasks_complete_once(
    make_app: AppFactory,
    clean_postgres_url: str,
    rabbitmq: PrivateRabbitMQ,
    workers: Workers,
    fault_report: FaultReport,
) -> None:
    """The same SIGKILL on RabbitMQ: what the worker held comes back, the running task after its lease."""
    rabbitmq_broker = rabbitmq.url
    workers.extra = {"CONVEYOR_CELERY_PREFETCH": "4"}
    victim = workers.start(rabbitmq_broker, clean_postgres_url, concurrency=1, name="victim")
    app = make_app(database_url=clean_postgres_url, executor="celery", broker_url=rabbitmq_broker, **FAST)
    busy = app.manager.submit("system.sleep", seconds=4, steps=8)
    wait_for(lambda: app.manager.get(busy).state is Status.PROCESSING, 20, "the long task to start")
    n = 8 * SCALE
    ids = [app.manager.submit("system.ping", payload=str(i)) for i in range(n)]
    ids += [app.manager.submit_task("system.ping", {"payload": "later"}, delay=2).id for _ in range(2)]
    wait_for(lambda: app.executor.broker_depths().get("default", 0) < n, 20, "the worker to reserve messages")
    workers.kill(victim)
    killed = time.monotonic()
    workers.extra = {}
    workers.start(rabbitmq_broker, clean_postgres_url, concurrency=2, name="rescuer")
    wait_until_finished(app, [busy, *ids], 45)
    row = report_outcome(
        fault_report,
        app,
        [busy, *ids],
        killed,
        fault="SIGKILL of a Celery worker mid-task with reserved and delayed tasks",
        setup=RABBITMQ_SETUP,
    )
    assert_all_succeeded_once(app, [busy, *ids], row)
    assert app.manager.get(busy).attempts == 2


def test_on_rabbitmq_a_message_the_broker_refuses_is_an_error_not_a_silent_loss(
    make_app: AppFactory, clean_postgres_url: str, rabbitmq: PrivateRabbitMQ
) -> None:
    """Publisher confirms: a queue that rejects publishes makes the submit fail (503), never a 202 for nothing."""
    policy = '{"max-length": 0, "overflow": "reject-publish"}'
    rabbitmq.ctl("set_policy", "-p", "/", "--apply-to", "queues", "full", "^default$", policy)
    app = make_app(database_url=clean_postgres_url, executor="celery", broker_url=rabbitmq.url)
    with pytest.raises(ExecutorError):
        app.manager.submit("system.ping", payload="refused")
    (stored,) = app.store.query(TaskQuery()).items
    assert stored.state is Status.FAILURE
    assert stored.message.startswith("not dispatched")


def test_a_rabbitmq_broker_killed_with_a_backlog_keeps_every_confirmed_message(
    make_app: AppFactory,
    clean_postgres_url: str,
    rabbitmq: PrivateRabbitMQ,
    workers: Workers,
    fault_report: FaultReport,
) -> None:
    """SIGKILL of the broker with accepted tasks queued: a submit while it is down is refused (503), not
    accepted for nothing; the restarted broker still holds every message it confirmed, and each runs once."""
    # No reaper round: what runs is what the broker kept, not what the reaper sent again.
    app, ids = queue_a_backlog(make_app, clean_postgres_url, rabbitmq.url)
    n = len(ids)
    rabbitmq.kill()
    killed = time.monotonic()
    with pytest.raises(ExecutorError):
        app.manager.submit("system.ping", payload="while the broker is down")
    refused_after = time.monotonic() - killed
    rabbitmq.start()
    wait_for(lambda: app.executor.broker_depths().get("default") is not None, 30, "the restarted broker")
    assert app.executor.broker_depths()["default"] == n
    workers.start(rabbitmq.url, clean_postgres_url, concurrency=2, name="after-restart")
    wait_until_finished(app, ids, 60)
    row = report_outcome(
        fault_report,
        app,
        ids,
        killed,
        fault="RabbitMQ broker SIGKILLed with a backlog queued, then restarted",
        setup=RABBITMQ_SETUP,
        notes=f"{n} of {n} messages kept by the broker; a submit while it was down refused after {refused_after:.1f}s",
    )
    assert_all_succeeded_once(app, ids, row)
    assert refused_after < 15
    (refused,) = app.store.query(TaskQuery(states=[Status.FAILURE])).items
    assert refused.message.startswith("not dispatched")


# -- the API process dies mid-burst ---------------------------------------------------------------------------


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_serve_killed_mid_burst_on_celery_leaves_no_stored_task_unrun(
    broker: str, tmp_path: Path, clean_postgres_url: str, workers: Workers, fault_report: FaultReport
) -> None:
    """SIGKILL of ``conveyor serve`` while eight clients submit: every 202 ends once; a task stored whose
    send (or whose answer) the kill cut off is sent again by the restarted serve's reaper, not stranded."""
    from tests.acceptance.server import Server
    from tests.lanes_workload import executions

    server: PrivateRedis | PrivateRabbitMQ = (
        PrivateRedis(tmp_path / "redis") if broker == "redis" else PrivateRabbitMQ(tmp_path / "rabbitmq")
    )
    server.start()
    marks = str(tmp_path / "executions")
    workloads = "system,tests.lanes_workload"
    env = {
        "CONVEYOR_EXECUTOR": "celery",
        "CONVEYOR_BROKER_URL": server.url,
        "CONVEYOR_DATABASE_URL": clean_postgres_url,
        "CONVEYOR_WORKLOADS": workloads,
        "CONVEYOR_SCHEDULER": "false",
        "CONVEYOR_TENANT_RATE": "0",
        "CONVEYOR_CELERY_PENDING_GRACE": "3",
        "CONVEYOR_CELERY_REAP_INTERVAL": "1",
    }
    store = None
    try:
        workers.start(server.url, clean_postgres_url, concurrency=2, name="steady", workloads=workloads)
        first = Server(tmp_path / "first", env=env).start(timeout=60)
        n = int(300 * SCALE)
        accepted: list[str] = []
        statuses: list[int] = []
        cut = [0]
        lock = threading.Lock()
        stop = threading.Event()

        def submit() -> None:
            with httpx.Client(base_url=first.url, timeout=30) as client:
                while not stop.is_set():
                    try:
                        reply = client.post(
                            "/api/v1/tasks", json={"task_type": "lanes.touch", "params": {"path": marks}}
                        )
                    except httpx.TransportError:
                        with lock:
                            cut[0] += 1
                        return
                    with lock:
                        statuses.append(reply.status_code)
                        if reply.status_code == 202:
                            accepted.append(reply.json()["task_id"])

        clients = [threading.Thread(target=submit) for _ in range(8)]
        for c in clients:
            c.start()
        wait_for(lambda: len(accepted) >= n, 60, f"{n} accepted submits")
        first.kill(signal.SIGKILL)
        killed = time.monotonic()
        stop.set()
        for c in clients:
            c.join(30)
        second = Server(tmp_path / "second", env=env).start(timeout=60)
        store = open_store(clean_postgres_url)
        store.open()
        tenant = store.get_many(accepted[:1])[0].tenant
        wait_for(lambda: store.count_unfinished(tenant) == 0, 60, "every stored task to finish")
        recovery = time.monotonic() - killed
        second.kill(signal.SIGKILL)
        records = store.get_many(accepted)
        ran = executions(marks)
        outcomes = {r.id: [e for e in store.events(r.id) if e.kind == "state" and e.state.finished] for r in records}
        stored = store.query(TaskQuery(tenant=tenant, limit=1)).total
    finally:
        if store is not None:
            store.close()
        server.stop()
    completed_once = sum(1 for r in records if r.state is Status.SUCCESS and len(outcomes[r.id]) == 1)
    row = fault_report.add(
        FaultRow(
            fault="SIGKILL of `conveyor serve` mid-burst, then restart",
            setup=f"celery + private {'redis' if broker == 'redis' else 'rabbitmq'}-server broker, postgres store",
            submitted=len(statuses) + cut[0],
            accepted=len(accepted),
            completed_once=completed_once,
            lost=sum(1 for r in records if r.state is not Status.SUCCESS),
            max_executions=max(ran.values(), default=0),
            recovery_s=round(recovery, 1),
            notes=f"{cut[0]} requests cut by the kill; {stored - len(accepted)} stored without their 202, all run",
        ).count_statuses(statuses)
    )
    assert row.server_errors == 0
    assert row.lost == 0
    assert completed_once == len(accepted)
    assert all(ran.get(r.id, 0) >= 1 for r in records)
    assert all(r.attempts >= ran.get(r.id, 0) for r in records)
