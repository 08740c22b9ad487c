"""The Celery side as operators run it: ``conveyor worker``, ``beat`` and ``inspect`` as real processes.

Broker: Redis database 9, emptied by each test (RabbitMQ for its depth
count, on a queue of the test's own). Stores: a SQLite file, or the session's
PostgreSQL where several processes write at once.
"""

from __future__ import annotations

import re
import signal
import uuid
from pathlib import Path

import psutil
import pytest
import redis

from conveyor import Conveyor, PeriodicJob, Settings, Status, TaskContext
from conveyor.executors.celery import CeleryExecutor
from conveyor.registry import Registry
from conveyor.scheduler import Scheduler
from conveyor.stores.base import TaskQuery
from tests.cli_process import CliProcess, inspect_json, ops_env, wait_until
from tests.conftest import AppFactory, CeleryWorkers, broker_url


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'conveyor.db'}"


def _worker(env: dict[str, str], log: Path, *args: str) -> CliProcess:
    # mingle and gossip only slow a lone test worker down
    return CliProcess(["worker", *args, "--without-mingle", "--without-gossip"], env, log).start(ready=b" ready.")


@pytest.mark.redis
@pytest.mark.slow
def test_conveyor_worker_runs_its_queue_and_finishes_the_running_task_on_sigterm(
    broker: str, tmp_path: Path, make_app: AppFactory, processes: list[CliProcess]
) -> None:
    """`conveyor worker -Q default -c 1` is Celery's worker itself; SIGTERM lets the running task finish."""
    db = _sqlite(tmp_path)
    app = make_app(executor="celery", broker_url=broker, database_url=db, run_executor=False)
    worker = _worker(ops_env(broker, db, tmp_path / "w"), tmp_path / "worker.log", "-Q", "default", "-c", "1")
    processes.append(worker)
    main = psutil.Process(worker.pid)
    assert main.cmdline()[1:6] == ["-m", "celery", "-A", "conveyor.worker", "worker"]  # exec'd: this pid gets signals

    ping = app.manager.wait(app.manager.submit("system.ping", payload="hello"), timeout=30)
    assert ping.state is Status.SUCCESS
    assert ping.result["payload"] == "hello"
    assert ping.result["pid"] in {c.pid for c in main.children()}

    sleeper = app.manager.submit("system.sleep", seconds=2.0, steps=4)
    wait_until(lambda: app.manager.get(sleeper).state is Status.PROCESSING, 30, "the sleep task to start")
    worker.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    assert app.manager.wait(sleeper, timeout=30).state is Status.SUCCESS
    assert worker.terminate(30) == 0
    assert "Warm shutdown" in worker.tail()


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
def test_two_beats_and_an_in_process_scheduler_submit_each_slot_once(
    broker: str, clean_postgres_url: str, tmp_path: Path, make_app: AppFactory, processes: list[CliProcess]
) -> None:
    """Two `conveyor beat`s and serve's Scheduler over one store: one record and one message per slot, none missed."""
    workloads = "system,tests.beat_workload"
    app = make_app(
        executor="celery",
        broker_url=broker,
        database_url=clean_postgres_url,
        workloads=workloads.split(","),
        run_executor=False,
    )  # started: the schema is in place before the beats open the store
    env = ops_env(broker, clean_postgres_url, tmp_path / "beat-data", CONVEYOR_WORKLOADS=workloads)
    beats = [CliProcess(["beat"], env, tmp_path / f"beat{i}.log").start(ready=b"beat: Starting") for i in (1, 2)]
    processes.extend(beats)
    scheduler = Scheduler(app.manager, [PeriodicJob("tick", "system.ping", every=1, params={"payload": "beat"})])
    scheduler.start()
    try:
        ticks = TaskQuery(types=["system.ping"], limit=500)
        wait_until(lambda: app.manager.list(ticks).total >= 5, 30, "five slots of the tick job")
        code, report = inspect_json(["beat"], env)
        assert code == 0
        assert report["beat"]["alive"] is True
        assert report["beat"]["jobs"]["tick"]["task_type"] == "system.ping"
    finally:
        scheduler.stop()
        for beat in beats:
            beat.terminate()

    records = app.manager.list(ticks).items
    assert all(r.tenant == "system" and r.params == {"payload": "beat"} for r in records)
    slots = sorted(int(str(r.idempotency_key).rsplit(":", 1)[1]) for r in records)
    assert slots == list(range(slots[0], slots[0] + len(slots)))  # each slot once, none skipped
    client = redis.Redis.from_url(broker)
    assert client.llen("default") == len(records)  # one message per record: nobody sent twice
    client.close()

    ids = {r.id for r in records}
    fired = [set(re.findall(r"periodic job tick, slot \S+: task (\S+)", beat.tail(200_000))) for beat in beats]
    fired.append({task_id for _, task_id in scheduler.fired})
    slot_of = {r.id: int(str(r.idempotency_key).rsplit(":", 1)[1]) for r in records}
    for submitted in fired:
        assert submitted <= ids
        assert submitted, "a scheduler never fired"
        # Each took part in (nearly) every slot while it ran; on a loaded machine one may start a
        # few seconds after the others, so its run is counted from its own first slot to its last.
        mine = sorted(slot_of[i] for i in submitted)
        assert len(submitted) >= (mine[-1] - mine[0] + 1) - 2
    code, report = inspect_json(["beat"], env)
    assert code == 1  # both stopped cleanly: no heartbeat left behind
    assert report["beat"]["alive"] is False


@pytest.mark.redis
@pytest.mark.slow
def test_inspect_json_lists_the_worker_and_the_broker_depths(
    broker: str, tmp_path: Path, make_app: AppFactory, processes: list[CliProcess]
) -> None:
    """`conveyor inspect --json`: the worker with its queues and types, and each queue's depth on Redis."""
    db = _sqlite(tmp_path)
    app = make_app(executor="celery", broker_url=broker, database_url=db, run_executor=False)
    env = ops_env(broker, db, tmp_path / "w")
    name = f"inspect-{uuid.uuid4().hex[:6]}"
    worker = _worker(env, tmp_path / "worker.log", "-Q", "default", "-c", "1", "-n", f"{name}@%h")
    processes.append(worker)
    # Queues the worker does not consume keep their messages; priorities spread them over Redis's sub-lists.
    for priority in (0, 3, 9):
        app.manager.submit_task("system.ping", queue="media", priority=priority)
    app.manager.submit_task("system.ping", queue="cpu", priority=5)
    done = app.manager.wait(app.manager.submit("system.ping"), timeout=30)
    assert done.state is Status.SUCCESS

    code, report = inspect_json([], env)
    assert code == 0
    (ours,) = [w for w in report["workers"] if w["name"].startswith(f"{name}@")]
    assert ours["pid"] == worker.pid
    assert ours["queues"] == ["default"]
    assert {"system.ping", "system.sleep"} <= set(ours["registered"])
    assert ours["processed"] >= 1
    assert report["queues"]["media"] == 3
    assert report["queues"]["cpu"] == 1
    assert report["queues"]["default"] == 0
    client = redis.Redis.from_url(broker)
    lists = ["media", *(f"media:{step}" for step in range(1, 10))]
    assert sum(int(client.llen(key)) for key in lists) == 3  # what the broker itself holds
    client.close()

    code, only_queues = inspect_json(["queues"], env)
    assert code == 0
    assert set(only_queues) == {"broker", "queues"}
    assert only_queues["queues"] == report["queues"]

    worker.terminate()
    code, nobody = inspect_json(["workers"], env)
    assert code == 1  # a health check can tell
    assert nobody["workers"] == []


@pytest.mark.rabbitmq
def _one_queue_app(tmp_path: Path, url: str, prefix: str) -> tuple[Conveyor, str]:
    """A Celery-backed app whose registry has one task type (``ops.noop``) on a queue of its own."""
    queue = f"{prefix}-{uuid.uuid4().hex[:8]}"  # the shared broker's own queues stay untouched
    registry = Registry()

    @registry.task("ops.noop", queue=queue)
    def noop(ctx: TaskContext) -> None:
        return None

    settings = Settings(executor="celery", broker_url=url, database_url=_sqlite(tmp_path), data_dir=tmp_path / "data")
    return Conveyor(settings, registry=registry), queue


def test_broker_depths_are_rabbitmq_message_counts(tmp_path: Path) -> None:
    """On RabbitMQ a queue's depth is its message count; a queue never declared holds nothing."""
    url = broker_url("amqp")
    conveyor, queue = _one_queue_app(tmp_path, url, "conveyor-test-depth")
    app = conveyor.start(executor=False)
    executor = app.executor
    assert isinstance(executor, CeleryExecutor)
    try:
        assert executor.broker_depths()[queue] == 0
        for priority in (0, 5, 9):
            app.manager.submit_task("ops.noop", priority=priority)
        depths = wait_until(lambda: (d := executor.broker_depths())[queue] == 3 and d, 10, "RabbitMQ to count 3")
        assert {"default", "maintenance"} <= set(depths)  # the core's queues; this registry has no workload types
    finally:
        with executor.app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
        app.stop()


def test_a_worker_consuming_a_queue_its_app_does_not_declare_declares_it_as_every_process_does(
    tmp_path: Path, private_workers: CeleryWorkers
) -> None:
    """``-Q documents`` on a worker without the documents workload: the queue still takes priorities.

    Declared without ``x-max-priority`` it clashes with the same queue declared by a process that has
    the workload (RabbitMQ answers PRECONDITION_FAILED) and the worker does not start. The worker is
    started for real on the shared broker, after the queue was declared by a full app.
    """
    url = broker_url("amqp")
    full, queue = _one_queue_app(tmp_path, url, "conveyor-test-undeclared")
    executor = full.executor
    assert isinstance(executor, CeleryExecutor)
    try:
        with executor.app.connection_for_write() as conn:
            executor.app.amqp.queues[queue].bind(conn.default_channel).declare()  # as the full app declares it
        # Raises with the worker's log if it exits instead of becoming ready.
        private_workers.start(url, _sqlite(tmp_path), concurrency=1, workloads="system", queues=queue)
    finally:
        with executor.app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
        executor.stop()
