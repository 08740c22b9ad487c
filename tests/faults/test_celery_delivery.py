"""Celery delivery holes: messages stranded in a dead worker, lost by the broker, and tasks that kill their process.

Each scenario runs real Celery workers (subprocesses) on a private broker —
a ``redis-server`` of the test's own, or a fresh RabbitMQ vhost — over a
PostgreSQL store, and records a reliability row. The reaper's interval and
the grace after which a waiting task is sent again are shortened so each
test stays well under a minute; ``CONVEYOR_FAULT_SCALE`` multiplies the
task counts for the big runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor, Status, TaskQuery
from conveyor.errors import ExecutorError
from conveyor.executors.base import MAX_REDELIVERIES
from conveyor.records import TaskRecord, new_task_id, now
from tests.conftest import AppFactory, CeleryWorkers
from tests.faults.report import FaultReport, FaultRow
from tests.faults.services import PrivateRedis, _need, rabbitmq_vhost

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
    app = make_app(
        database_url=clean_postgres_url,
        executor="celery",
        broker_url=redis_broker.url,
        **{**FAST, "celery_reap_interval": 3600.0},
    )
    n = 20 * SCALE
    ids = [app.manager.submit("system.ping", payload=str(i)) for i in range(n)]
    assert app.executor.broker_depths()["default"] == n
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


@pytest.fixture
def rabbitmq_broker() -> str:
    """A fresh, empty vhost: the one ``CONVEYOR_TEST_RABBITMQ`` names, else one of this file's own."""
    named = os.environ.get("CONVEYOR_TEST_RABBITMQ", "").rsplit("/", 1)[-1]
    return rabbitmq_vhost(named if named and named != "/" else "conveyor-delivery")


@pytest.mark.rabbitmq
def test_on_rabbitmq_a_killed_workers_running_reserved_and_delayed_tasks_complete_once(
    make_app: AppFactory,
    clean_postgres_url: str,
    rabbitmq_broker: str,
    workers: Workers,
    fault_report: FaultReport,
) -> None:
    """The same SIGKILL on RabbitMQ: what the worker held comes back, the running task after its lease."""
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
        setup="celery + rabbitmq vhost, postgres store, publisher confirms",
    )
    assert_all_succeeded_once(app, [busy, *ids], row)
    assert app.manager.get(busy).attempts == 2


@pytest.mark.rabbitmq
def test_on_rabbitmq_a_message_the_broker_refuses_is_an_error_not_a_silent_loss(
    make_app: AppFactory, clean_postgres_url: str, rabbitmq_broker: str
) -> None:
    """Publisher confirms: a queue that rejects publishes makes the submit fail (503), never a 202 for nothing."""
    ctl = _need("rabbitmqctl")
    vhost = rabbitmq_broker.rsplit("/", 1)[-1]
    policy = '{"max-length": 0, "overflow": "reject-publish"}'
    subprocess.run(
        [ctl, "set_policy", "-p", vhost, "--apply-to", "queues", "full", "^default$", policy],
        check=True,
        capture_output=True,
        timeout=60,
    )
    app = make_app(database_url=clean_postgres_url, executor="celery", broker_url=rabbitmq_broker)
    with pytest.raises(ExecutorError):
        app.manager.submit("system.ping", payload="refused")
    (stored,) = app.store.query(TaskQuery()).items
    assert stored.state is Status.FAILURE
    assert stored.message.startswith("not dispatched")
