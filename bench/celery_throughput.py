"""Conveyor on Celery, end to end, beside raw Celery, RQ and Dramatiq, as ratios.

    python -m bench.celery_throughput [--tasks 5000] [--postgres postgresql://postgres@127.0.0.1/test]
                                      [--combos redis+postgresql,redis+redis,amqp+postgresql,amqp+redis]

What is measured (all on this machine, in one run):

* **Conveyor on Celery**: ``N`` no-op tasks (``bench.noop``) submitted with
  ``TaskManager.submit_many`` — each one a store record written before its
  message is sent — to one ``celery -A conveyor.worker worker -P prefork -c 2``,
  timed from the first submit until the store holds ``N`` SUCCESS records. The
  worker claims each task in the store (PENDING → PROCESSING, one atomic
  write) and records its outcome (one more) before it acknowledges the
  message. For each broker (Redis, RabbitMQ) and store (PostgreSQL, Redis).
* **Raw Celery** on the same broker with the same worker flags
  (``-P prefork -c 2``), its own defaults otherwise (early acks, prefetch 4,
  no result backend): ``bench.peers.run``, first send to last completion;
  and again with the delivery guarantees Conveyor's app runs with (late
  acks, requeue on a lost worker, prefetch 1), to tell their cost from ours;
  and again as the seeds run it, with a Redis result backend that records
  STARTED (``task_track_started``): the writes Conveyor's store replaces.
* **RQ** (``worker-pool -n 2``, SimpleWorker) and **Dramatiq** (``-p 2 -t 8``)
  on the same Redis, measured the same way.

Ratios are Conveyor ÷ peer: above 1 means Conveyor drained the same work faster.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BROKERS = {"redis": "redis://127.0.0.1:6379/10", "amqp": "amqp://guest:guest@127.0.0.1:5672/conveyor-bench"}
REDIS_STORE = "redis://127.0.0.1:6379/8"
#: the same for raw Celery and for Conveyor's worker
WORKER_FLAGS = [
    "-P",
    "prefork",
    "-c",
    "2",
    "-Q",
    "default",
    "--without-gossip",
    "--without-mingle",
    "--without-heartbeat",
]


def _prepare(broker: str, store_url: str) -> None:
    """Empty broker namespace and store, so that each run starts from nothing."""
    import redis

    if broker == "amqp":
        ctl = ["rabbitmqctl"]
        subprocess.run([*ctl, "delete_vhost", "conveyor-bench"], capture_output=True, timeout=60)
        subprocess.run([*ctl, "add_vhost", "conveyor-bench"], check=True, capture_output=True, timeout=60)
        subprocess.run(
            [*ctl, "set_permissions", "-p", "conveyor-bench", "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
            timeout=60,
        )
    else:
        redis.Redis.from_url(BROKERS["redis"]).flushdb()
    if store_url.startswith("redis"):
        redis.Redis.from_url(store_url).flushdb()
    else:
        import sqlalchemy as sa

        from conveyor.settings import Settings
        from conveyor.stores.sql import SqlStore

        store = SqlStore(Settings(database_url=store_url).resolved_database_url)
        store.open()
        with store.engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE conveyor_tasks, conveyor_task_events"))
        store.close()


def start_worker(broker_url: str, store_url: str, data_dir: Path, prefetch: int = 1) -> subprocess.Popen[bytes]:
    """``celery -A conveyor.worker worker`` with the bench's flags, in a session of its own (``stop_group``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(
        PYTHONPATH=str(REPO),
        CONVEYOR_EXECUTOR="celery",
        CONVEYOR_BROKER_URL=broker_url,
        CONVEYOR_DATABASE_URL=store_url,
        CONVEYOR_DATA_DIR=str(data_dir),
        CONVEYOR_WORKLOADS="system,bench.noop_workload",
        CONVEYOR_CELERY_PREFETCH=str(prefetch),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "conveyor.worker", "worker", *WORKER_FLAGS, "-l", "WARNING"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def conveyor_on_celery(n: int, broker: str, store_url: str, prefetch: int = 1) -> float:
    """Tasks per second, first submit to the N-th SUCCESS in the store."""
    from bench.peers.run import stop_group
    from conveyor import Conveyor, Settings, SubmitRequest

    _prepare(broker, store_url)
    data_dir = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    worker = start_worker(BROKERS[broker], store_url, data_dir, prefetch)
    settings = Settings(
        data_dir=data_dir,
        database_url=store_url,
        executor="celery",
        broker_url=BROKERS[broker],
        workloads=["system", "bench.noop_workload"],
        max_unfinished_per_tenant=10 * n,
        scheduler=False,
    )
    app = Conveyor(settings).start()
    try:
        warm = app.manager.submit("bench.noop")
        app.manager.wait(warm, timeout=120)
        t0 = time.perf_counter()
        for i in range(0, n, 500):
            app.manager.submit_many([SubmitRequest("bench.noop")] * min(500, n - i))
        while sum(q.counts.get("SUCCESS", 0) for q in app.store.queue_stats()) < n + 1:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}")
            time.sleep(0.02)
        elapsed = time.perf_counter() - t0
    finally:
        app.stop()
        stop_group(worker, 30)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--combos", default="redis+postgresql,redis+redis,amqp+postgresql,amqp+redis")
    parser.add_argument("--peers", default="rq,dramatiq")
    parser.add_argument(
        "--prefetch", default="1,4", help="CONVEYOR_CELERY_PREFETCH values to run (1 is the default; 4 is Celery's)"
    )
    args = parser.parse_args()

    from bench.peers import run as peers

    print(f"# celery_throughput  tasks={args.tasks}  cores={os.cpu_count()}  worker flags: -P prefork -c 2")
    raw: dict[str, float] = {}
    #: raw Celery with the delivery guarantees Conveyor's app runs with (late acks, prefetch 1)
    safe: dict[str, float] = {}
    #: raw Celery as the seeds run it: a Redis result backend that records STARTED
    seedlike: dict[str, float] = {}
    ours: list[tuple[str, str, float]] = []  # (label, broker, tasks/s)
    for combo in args.combos.split(","):
        broker, store = combo.split("+")
        if broker not in raw:
            res = peers.celery(args.tasks, broker=broker, pool="prefork", concurrency=2)
            raw[broker] = res.tasks_per_second
            print(f"{'raw celery ' + broker + ' -P prefork -c 2':<48} {raw[broker]:8.0f} tasks/s", flush=True)
            res = peers.celery(args.tasks, broker=broker, pool="prefork", concurrency=2, safe=True)
            safe[broker] = res.tasks_per_second
            label = "raw celery " + broker + ", acks_late, prefetch 1"
            print(f"{label:<48} {safe[broker]:8.0f} tasks/s", flush=True)
            res = peers.celery(args.tasks, broker=broker, pool="prefork", concurrency=2, backend=True)
            seedlike[broker] = res.tasks_per_second
            label = "raw celery " + broker + " + redis result backend"
            print(f"{label:<48} {seedlike[broker]:8.0f} tasks/s", flush=True)
        for prefetch in (int(p) for p in args.prefetch.split(",")):
            url = args.postgres if store == "postgresql" else REDIS_STORE
            rate = conveyor_on_celery(args.tasks, broker, url, prefetch)
            label = f"{broker}, {store} store, prefetch {prefetch}"
            ours.append((label, broker, rate))
            print(f"{'conveyor on celery ' + label:<48} {rate:8.0f} tasks/s", flush=True)
    others: list[tuple[str, float]] = []
    for name in [p for p in args.peers.split(",") if p]:
        res = peers.rq(args.tasks, workers=2) if name == "rq" else peers.dramatiq(args.tasks, processes=2, threads=8)
        others.append((res.name, res.tasks_per_second))
        print(f"{res.name:<48} {res.tasks_per_second:8.0f} tasks/s", flush=True)

    print("\n# ratios (Conveyor ÷ peer; > 1 means Conveyor is faster)")
    for label, broker, rate in ours:
        parts = [
            f"{rate / raw[broker]:5.2f}× raw celery[{broker}]",
            f"{rate / safe[broker]:5.2f}× same, late acks",
            f"{rate / seedlike[broker]:5.2f}× same, result backend",
        ]
        if broker == "redis":
            parts += [f"{rate / r:5.2f}× {name.split()[0]}" for name, r in others]
        print(f"{'conveyor ' + label:<48} " + "  ".join(parts))


if __name__ == "__main__":
    main()
