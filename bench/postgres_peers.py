"""Conveyor on PostgreSQL beside Procrastinate and PgQueuer on the same server, as ratios.

    python -m bench.postgres_peers [--tasks 4000] [--bulk 20000] [--drain 10000] [--runs 3]
                                   [--admin postgresql://postgres@127.0.0.1:5432/postgres]

Three figures per system, each the median of ``--runs`` runs, every run a
fresh process on a fresh database (created and dropped here):

* **single**: one submit per task (Conveyor ``TaskManager.submit``,
  Procrastinate ``defer_async``, PgQueuer ``Queries.enqueue``) from 8
  concurrent submitters (threads for Conveyor's sync API, asyncio tasks with
  a connection each for the async peers), timed until the last call returned.
  Nothing runs the tasks meanwhile: the peers' workers are not started, and
  Conveyor's tasks are submitted with ``delay=3600`` so that its local pool
  (which ``Conveyor.start`` always runs) holds them instead of running them.
  Each submit is a durable commit in all three.
* **bulk**: the same number of tasks in batches of 1,000 (``submit_many``,
  ``batch_defer_async``, ``enqueue`` with lists).
* **drain**: ``--drain`` no-op tasks already queued in the store, then the
  workers start; timed until every task has run. Conveyor: 2 worker
  processes of ``conveyor``'s local pool on a backlog a dead pool left (the
  start-up recovery path); Procrastinate: one worker, concurrency 8;
  PgQueuer: batch sizes 10 and 100, the best of them kept.

After each run the store is counted: the rows written (single, bulk) or the
tasks finished (drain) must equal the tasks asked for, or the run fails.
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
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SUBMITTERS = 8
BATCH = 1000


# -- databases ------------------------------------------------------------------------------


@contextmanager
def fresh_database(admin: str) -> Iterator[str]:
    import psycopg

    name = f"bench_pg_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _count(url: str, sql: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def _split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


# -- Conveyor -------------------------------------------------------------------------------


def _conveyor(url: str, *, concurrency: int = 2) -> Any:
    from conveyor import Conveyor, Settings

    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="conveyor-pgbench-")),
        database_url=url,
        concurrency=concurrency,
        max_unfinished_per_tenant=10**7,
        scheduler=False,
        workloads=["system", "bench.noop_workload"],
    )
    return Conveyor(settings)


def conveyor_single(url: str, n: int) -> float:
    app = _conveyor(url).start()
    try:
        m = app.manager
        m.submit_task("bench.noop", delay=3600)  # warm: connections, statement caches
        barrier = threading.Barrier(SUBMITTERS + 1)
        errors: list[BaseException] = []

        def submitter(k: int) -> None:
            barrier.wait()
            try:
                for _ in range(k):
                    m.submit_task("bench.noop", delay=3600)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=submitter, args=(k,)) for k in _split(n, SUBMITTERS)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        if errors:
            raise errors[0]
    finally:
        app.stop(graceful=False)
    _verify(_count(url, "SELECT count(*) FROM conveyor_tasks") - 1, n)
    return n / elapsed


def conveyor_bulk(url: str, n: int) -> float:
    from conveyor import SubmitRequest, TaskRecord

    app = _conveyor(url).start()
    try:
        m = app.manager
        m.submit_task("bench.noop", delay=3600)
        t0 = time.perf_counter()
        accepted = 0
        for size in _split(n, max(1, n // BATCH)):
            answers = m.submit_many([SubmitRequest("bench.noop", delay=3600)] * size)
            accepted += sum(isinstance(a, TaskRecord) for a in answers)
        elapsed = time.perf_counter() - t0
    finally:
        app.stop(graceful=False)
    _verify(accepted, n)
    _verify(_count(url, "SELECT count(*) FROM conveyor_tasks") - 1, n)
    return n / elapsed


def conveyor_drain(url: str, n: int) -> float:
    from conveyor.records import TaskRecord, new_task_id

    app = _conveyor(url)
    app.store.open()
    # The backlog a pool killed before it ran anything leaves: PENDING local tasks of a holder that is gone.
    for size in _split(n, max(1, n // BATCH)):
        app.store.insert(
            [
                TaskRecord(id=new_task_id(), type="bench.noop", executor="local", message="Queued", worker="gone")
                for _ in range(size)
            ]
        )
    t0 = time.perf_counter()
    app.start()
    try:
        done_sql = "SELECT count(*) FROM conveyor_tasks WHERE state = 'SUCCESS'"
        deadline = time.monotonic() + 600
        while _count(url, done_sql) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {_count(url, done_sql)} of {n} tasks ran in 600 s")
            time.sleep(0.02)
        elapsed = time.perf_counter() - t0
    finally:
        app.stop(graceful=False)
    _verify(_count(url, "SELECT count(*) FROM conveyor_tasks WHERE state = 'SUCCESS'"), n)
    return n / elapsed


# -- Procrastinate --------------------------------------------------------------------------


def _procrastinate(url: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url, min_size=SUBMITTERS))
    app.done = 0  # type: ignore[attr-defined]

    @app.task(name="noop")
    async def noop() -> None:
        app.done += 1  # type: ignore[attr-defined]

    app.noop = noop  # type: ignore[attr-defined]
    return app


async def _procrastinate_run(url: str, n: int, mode: str) -> float:
    app = _procrastinate(url)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        noop = app.noop
        t0 = time.perf_counter()
        if mode == "single":

            async def submitter(k: int) -> None:
                for _ in range(k):
                    await noop.defer_async()

            await asyncio.gather(*(submitter(k) for k in _split(n, SUBMITTERS)))
        elif mode == "bulk":
            for size in _split(n, max(1, n // BATCH)):
                await noop.batch_defer_async(*([{}] * size))
        else:
            for size in _split(n, max(1, n // BATCH)):
                await noop.batch_defer_async(*([{}] * size))
            t0 = time.perf_counter()
            await app.run_worker_async(wait=False, concurrency=8, install_signal_handlers=False, listen_notify=False)
        elapsed = time.perf_counter() - t0
    if mode == "drain":
        _verify(_count(url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"), n)
    else:
        _verify(_count(url, "SELECT count(*) FROM procrastinate_jobs"), n)
    return n / elapsed


# -- PgQueuer -------------------------------------------------------------------------------


async def _pgqueuer_run(url: str, n: int, mode: str, batch_size: int = 10) -> float:
    import psycopg
    from pgqueuer import PgQueuer, PsycopgDriver, Queries

    async def connect() -> Any:
        return await psycopg.AsyncConnection.connect(url, autocommit=True)

    first = await connect()
    queries = Queries(PsycopgDriver(first))
    await queries.install()

    async def bulk(total: int) -> None:
        for size in _split(total, max(1, total // BATCH)):
            await queries.enqueue(["noop"] * size, [None] * size, [0] * size)

    if mode == "single":
        conns = [await connect() for _ in range(SUBMITTERS)]

        async def submitter(q: Any, k: int) -> None:
            for _ in range(k):
                await q.enqueue("noop", None)

        t0 = time.perf_counter()
        await asyncio.gather(
            *(submitter(Queries(PsycopgDriver(c)), k) for c, k in zip(conns, _split(n, SUBMITTERS), strict=True))
        )
        elapsed = time.perf_counter() - t0
        for c in conns:
            await c.close()
        _verify(_count(url, "SELECT count(*) FROM pgqueuer"), n)
    elif mode == "bulk":
        t0 = time.perf_counter()
        await bulk(n)
        elapsed = time.perf_counter() - t0
        _verify(_count(url, "SELECT count(*) FROM pgqueuer"), n)
    else:
        from pgqueuer.types import QueueExecutionMode

        await bulk(n)
        done = 0
        pgq = PgQueuer(PsycopgDriver(await connect()))

        @pgq.entrypoint("noop")
        async def noop(job: Any) -> None:
            nonlocal done
            done += 1

        t0 = time.perf_counter()
        await pgq.run(batch_size=batch_size, mode=QueueExecutionMode.drain)
        elapsed = time.perf_counter() - t0
        _verify(done, n)
        _verify(_count(url, "SELECT count(*) FROM pgqueuer"), 0)
    await first.close()
    return n / elapsed


# -- the run --------------------------------------------------------------------------------


def _verify(got: int, want: int) -> None:
    if got != want:
        raise RuntimeError(f"the store holds {got} tasks where {want} were asked for")


CASES: dict[str, Callable[[str, int], float]] = {
    "conveyor single": conveyor_single,
    "conveyor bulk": conveyor_bulk,
    "conveyor drain": conveyor_drain,
    "procrastinate single": lambda u, n: asyncio.run(_procrastinate_run(u, n, "single")),
    "procrastinate bulk": lambda u, n: asyncio.run(_procrastinate_run(u, n, "bulk")),
    "procrastinate drain": lambda u, n: asyncio.run(_procrastinate_run(u, n, "drain")),
    "pgqueuer single": lambda u, n: asyncio.run(_pgqueuer_run(u, n, "single")),
    "pgqueuer bulk": lambda u, n: asyncio.run(_pgqueuer_run(u, n, "bulk")),
    "pgqueuer drain batch 10": lambda u, n: asyncio.run(_pgqueuer_run(u, n, "drain", 10)),
    "pgqueuer drain batch 100": lambda u, n: asyncio.run(_pgqueuer_run(u, n, "drain", 100)),
}


def run_case(admin: str, case: str, n: int) -> float:
    """One run of ``case`` in a fresh process on a fresh database."""
    with fresh_database(admin) as url:
        out = subprocess.run(
            [sys.executable, "-m", "bench.postgres_peers", "--child", case, url, str(n)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    if out.returncode != 0:
        raise RuntimeError(f"{case}: {out.stderr[-3000:]}")
    rate: float = json.loads(out.stdout.strip().splitlines()[-1])["rate"]
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=4000, help="tasks of the single-submit runs")
    parser.add_argument("--bulk", type=int, default=20000, help="tasks of the bulk runs")
    parser.add_argument("--drain", type=int, default=10000, help="tasks of the drain runs")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--only", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--child", nargs=3, metavar=("CASE", "URL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, url, n = args.child
        print(json.dumps({"rate": CASES[case](url, int(n))}))
        return
    sizes = {"single": args.tasks, "bulk": args.bulk, "drain": args.drain}
    chosen = [c for c in CASES if not args.only or c in args.only.split(",")]
    medians: dict[str, float] = {}
    print(f"# postgres_peers  single={args.tasks}  bulk={args.bulk}  drain={args.drain}  runs={args.runs}")
    for case in chosen:
        n = sizes[case.split()[1]]
        rates = [run_case(args.admin, case, n) for _ in range(args.runs)]
        medians[case] = statistics.median(rates)
        runs = " ".join(f"{r:.0f}" for r in rates)
        print(f"{case:<28} {medians[case]:8.0f} tasks/s  (runs: {runs})", flush=True)
    print("\n# ratios (Conveyor ÷ peer; > 1 means Conveyor is faster)")
    for kind in ("single", "bulk", "drain"):
        ours = medians.get(f"conveyor {kind}")
        peers = {c: r for c, r in medians.items() if not c.startswith("conveyor") and c.split()[1] == kind}
        if ours is None or not peers:
            continue
        best = max(peers, key=lambda c: peers[c])
        parts = "   ".join(f"{ours / r:.2f}× {c}" for c, r in peers.items())
        print(f"conveyor {kind:<7} {parts}   (best peer: {best})")


if __name__ == "__main__":
    main()
