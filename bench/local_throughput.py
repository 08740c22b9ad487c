"""Local executor throughput and submit-API latency, beside the peers, as ratios.

    python -m bench.local_throughput [--tasks 20000] [--rate 200] [--duration 10]
                                     [--postgres postgresql://postgres@127.0.0.1/test] [--peers ...]

What is measured (all on this machine, in one run):

* **Conveyor end to end**: ``N`` no-op tasks submitted through ``TaskManager``
  to the local executor (2 worker processes), timed from the first submit to
  the moment the store holds ``N`` SUCCESS records — store writes included
  (insert before dispatch, PROCESSING and SUCCESS with their timeline rows).
  Two ways of submitting: one ``submit()`` call per task, and ``submit_many``
  in batches of 500. Each run is a fresh process with a fresh database.
* **Peers**: the same no-op through Celery (Redis, ``-P threads -c 4``),
  Dramatiq (``-p 2 -t 8``), Huey (``-w 2 -k process``) and RQ, measured by
  ``bench.peers.run`` from first enqueue to last completion.
* **Submit latency**: ``POST /api/v1/tasks`` against a real ``conveyor serve``
  at a fixed request rate (open loop: requests are sent on schedule whether or
  not earlier ones have answered), beside a minimal FastAPI app that does what
  the seeds did by hand, ``celery_app.send_task(...)`` on Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


# -- Conveyor, in a child process of its own ------------------------------------------------


def _child(url: str, n: int, mode: str) -> None:
    from conveyor import Conveyor, Settings, SubmitRequest, TaskContext, TaskRecord, task

    @task("bench.noop")
    def noop(ctx: TaskContext) -> None:
        return None

    data_dir = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    settings = Settings(
        data_dir=data_dir, database_url=url, concurrency=2, max_unfinished_per_tenant=10 * n, scheduler=False
    )
    app = Conveyor(settings).start()
    if settings.store_kind == "sql" and "postgresql" in settings.resolved_database_url:
        import sqlalchemy as sa

        engine: Any = app.store.engine  # type: ignore[attr-defined]
        with engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE conveyor_tasks, conveyor_task_events"))
    m = app.manager
    t0 = time.perf_counter()
    if mode == "single":
        ids = [m.submit("bench.noop") for _ in range(n)]
    else:
        ids = []
        for i in range(0, n, 500):
            ids += [
                r.id
                for r in m.submit_many([SubmitRequest("bench.noop")] * min(500, n - i))
                if isinstance(r, TaskRecord)
            ]
    t_submitted = time.perf_counter()
    while True:
        done = sum(q.counts.get("SUCCESS", 0) for q in app.store.queue_stats())
        if done >= n:
            break
        time.sleep(0.005)
    t_done = time.perf_counter()
    app.stop()
    print(json.dumps({"submit_seconds": t_submitted - t0, "total_seconds": t_done - t0, "tasks": len(ids)}))


def conveyor_throughput(url: str, n: int, mode: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.local_throughput", "--child", url, str(n), mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- submit latency at a fixed rate ---------------------------------------------------------


async def _open_loop(url: str, path: str, body: dict[str, Any], rate: float, duration: float) -> list[float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=500)) as client:
        for _ in range(20):  # warm up connections and code paths
            await client.post(path, json=body)

        async def one() -> None:
            nonlocal errors
            t = time.perf_counter()
            r = await client.post(path, json=body)
            if r.status_code >= 400:
                errors += 1
            latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        pending = []
        for i in range(int(rate * duration)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(one()))
        await asyncio.gather(*pending)
    if errors:
        raise RuntimeError(f"{errors} requests failed")
    return latencies


def _percentiles(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=100)
    return {"p50_ms": qs[49] * 1000, "p99_ms": qs[98] * 1000, "n": len(samples)}


def _serve(cmd: list[str], port: int, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    import httpx

    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{cmd[:3]} did not start")


def conveyor_latency(rate: float, duration: float) -> dict[str, float]:
    port = 18731
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(PYTHONPATH=str(REPO), CONVEYOR_CONCURRENCY="2", CONVEYOR_MAX_UNFINISHED_PER_TENANT="1000000")
    cwd = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    proc = _serve(
        [sys.executable, "-m", "conveyor", "serve", "--port", str(port), "--log-level", "warning"], port, env, cwd
    )
    try:
        samples = asyncio.run(
            _open_loop(f"http://127.0.0.1:{port}", "/api/v1/tasks", {"task_type": "system.ping"}, rate, duration)
        )
    finally:
        proc.terminate()
        proc.wait(30)
    return _percentiles(samples)


def celery_api_latency(rate: float, duration: float) -> dict[str, float]:
    """The seeds' hand-made endpoint: FastAPI calling Celery's send_task on Redis, one uvicorn process."""
    port = 18732
    env = {**os.environ, "PYTHONPATH": str(REPO), "BENCH_BROKER": "redis://127.0.0.1:6379/7"}
    cwd = Path(tempfile.mkdtemp(prefix="celery-bench-"))
    proc = _serve(
        [sys.executable, "-m", "uvicorn", "bench.celery_api:app", "--port", str(port), "--log-level", "warning"],
        port,
        env,
        cwd,
    )
    try:
        samples = asyncio.run(_open_loop(f"http://127.0.0.1:{port}", "/tasks", {"task_type": "noop"}, rate, duration))
    finally:
        proc.terminate()
        proc.wait(30)
        import redis

        redis.Redis.from_url("redis://127.0.0.1:6379/7").flushdb()
    return _percentiles(samples)


# -- the run --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--peer-tasks", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200.0, help="submit requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of submitting")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--peers", default="celery-redis,dramatiq,huey,rq")
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]), args.child[2])
        return

    rows: list[tuple[str, float]] = []
    print(f"# local_throughput  tasks={args.tasks}  peer_tasks={args.peer_tasks}  cores={os.cpu_count()}")
    stores = {"sqlite": "", "postgresql": args.postgres}
    for store, url in stores.items():
        for mode in ("single", "batch"):
            r = conveyor_throughput(url, args.tasks, mode)
            rate = r["tasks"] / r["total_seconds"]
            label = f"conveyor local {store} {'submit()' if mode == 'single' else 'submit_many(500)'}"
            rows.append((label, rate))
            print(f"{label:<55} {rate:8.0f} tasks/s  (submitting {r['tasks'] / r['submit_seconds']:.0f}/s)", flush=True)

    peers: list[tuple[str, float]] = []
    from bench.peers import run as peer_run

    for name in [p for p in args.peers.split(",") if p]:
        if name == "celery-redis":
            res = peer_run.celery(args.peer_tasks, broker="redis", pool="threads", concurrency=4)
        elif name == "celery-amqp":
            res = peer_run.celery(args.peer_tasks, broker="amqp", pool="threads", concurrency=4)
        elif name == "dramatiq":
            res = peer_run.dramatiq(args.peer_tasks, processes=2, threads=8)
        elif name == "huey":
            res = peer_run.huey(args.peer_tasks, workers=2, worker_type="process")
        elif name == "rq":
            res = peer_run.rq(args.peer_tasks, workers=2)
        else:
            raise SystemExit(f"unknown peer {name}")
        peers.append((res.name, res.tasks_per_second))
        print(f"{res.name:<55} {res.tasks_per_second:8.0f} tasks/s  (drain {res.drain_per_second:.0f}/s)", flush=True)

    print("\n# ratios (Conveyor ÷ peer; > 1 means Conveyor is faster)")
    best_peer = max(peers, key=lambda p: p[1]) if peers else None
    for label, rate in rows:
        parts = [f"{rate / p_rate:5.2f}× {p_name.split()[0]}" for p_name, p_rate in peers]
        print(f"{label:<55} " + "  ".join(parts))
    if best_peer:
        print(f"fastest peer: {best_peer[0]} at {best_peer[1]:.0f}/s")

    print(f"\n# submit latency, open loop at {args.rate:.0f} req/s for {args.duration:.0f}s")
    ours = conveyor_latency(args.rate, args.duration)
    print(
        f"conveyor serve POST /api/v1/tasks (SQLite)        p50 {ours['p50_ms']:6.2f} ms  p99 {ours['p99_ms']:6.2f} ms"
    )
    theirs = celery_api_latency(args.rate, args.duration)
    print(
        f"FastAPI + celery send_task (Redis)                p50 {theirs['p50_ms']:6.2f} ms  "
        f"p99 {theirs['p99_ms']:6.2f} ms"
    )
    print(
        f"ratio (peer ÷ Conveyor; > 1 means Conveyor answers faster): p50 {theirs['p50_ms'] / ours['p50_ms']:.2f}×"
        f"  p99 {theirs['p99_ms'] / ours['p99_ms']:.2f}×"
    )


if __name__ == "__main__":
    main()
