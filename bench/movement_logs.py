"""Movement logs (issue 11): the producer route beside a bare LPUSH endpoint, and the batch drain.

    python -m bench.movement_logs [--requests 20000] [--connections 32] [--list-size 100]
                                  [--drain 100000] [--redis redis://127.0.0.1:6379/8]
                                  [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

What is measured, all in one run on this machine:

* **add-movement, one log a request**: ``POST /api/logs/add-movement/`` with
  seed 003's body against a real server (uvicorn, one process, Conveyor with
  the queue on Redis), beside two bare FastAPI apps doing only one Redis
  LPUSH of the body: one ``async def`` with ``redis.asyncio``, one ``def``
  with the sync client (FastAPI runs it in its thread pool). The three run
  at once and take turns (three rounds each, median). Closed loop,
  ``--connections`` keep-alive connections from a small asyncio client in
  this process; the first 5 % of requests warm up and are not counted.
* **add-movement, lists**: the same route with ``--list-size`` logs per
  request, in logs/s.
* **drain**: ``--drain`` logs queued in Redis, moved into ``movement_logs`` on
  PostgreSQL (a fresh database) by ``run_batches`` in batches of the default size,
  checked for count and ids; beside a plain psycopg ``executemany`` of the
  same rows into the same (emptied) table.
* ``--attribution`` instead: one POST through the bare app, through the
  workload's router alone in a bare FastAPI app, and through the full
  Conveyor app, each called in process as an ASGI app (no sockets).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# At module level: the endpoints' annotations are strings (PEP 563) that FastAPI resolves here.
from fastapi import FastAPI, Request

REPO = Path(__file__).resolve().parents[1]
SEED_BODY = {"user_id": "USER123", "track_id": 1, "bbox": [100, 100, 200, 200], "state": "walking", "store": "Store A"}
AIM_RATIO = 0.9
AIM_DRAIN = 50_000.0
#: turns each server takes in the one-log-a-request comparison
ROUNDS = 3


# -- the apps, each served by uvicorn in a process of its own ------------------------------------


def bare_async_app() -> Any:
    """What a hand-written endpoint does at the least: one LPUSH, async."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(os.environ["BENCH_REDIS"])
    app = FastAPI()

    @app.post("/push", status_code=202)
    async def push(request: Request) -> dict[str, Any]:
        body = await request.json()
        length = await client.lpush("bare_logs", json.dumps(body))
        return {"status": "queued", "queue_length": length}

    return app


def bare_sync_app() -> Any:
    """The same with the sync client, as a Django view would do it."""
    import redis

    client = redis.Redis.from_url(os.environ["BENCH_REDIS"])
    app = FastAPI()

    @app.post("/push", status_code=202)
    def push(body: dict[str, Any]) -> dict[str, Any]:
        length = client.lpush("bare_logs", json.dumps(body))
        return {"status": "queued", "queue_length": length}

    return app


def conveyor_app() -> Any:
    """Conveyor's API with the movement logs workload, its queue on BENCH_REDIS."""
    from conveyor import Conveyor, Settings
    from conveyor.api.main import create_app

    settings = Settings(
        data_dir=Path(os.environ["BENCH_DATA"]),
        workloads=["system", "movement_logs"],
        scheduler=False,
        concurrency=1,
    )
    return create_app(Conveyor(settings))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(factory: str, env: dict[str, str]) -> Iterator[int]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            f"bench.movement_logs:{factory}",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{factory} did not start")
            time.sleep(0.1)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# -- a small closed-loop HTTP/1.1 client ---------------------------------------------------------


async def _connection(port: int, request: bytes, count: int, warm: int, stamps: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            if status != b"202":
                raise RuntimeError(f"HTTP {status.decode()}: {body[:300]!r}")
            if i >= warm:
                stamps.append(time.perf_counter())
    finally:
        writer.close()


def load(port: int, path: str, body: Any, total: int, connections: int) -> float:
    """Requests/s over the counted (post warm-up) requests."""
    data = json.dumps(body).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data
    per = max(1, total // connections)
    warm = max(1, per // 20)
    stamps: list[float] = []

    async def run() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(_connection(port, request, per, warm, stamps) for _ in range(connections)))
        return t0

    asyncio.run(run())
    stamps.sort()
    # Counted from the moment every connection has warmed up to the last answer.
    start = stamps[0]
    return (len(stamps) - 1) / (stamps[-1] - start)


# -- drain ----------------------------------------------------------------------------------------


def drain(n: int, redis_url: str, pg_admin: str) -> tuple[float, float]:
    import psycopg
    import redis as redis_lib
    import sqlalchemy as sa

    from conveyor.stores.sql import create_engine_for
    from conveyor.workloads.movement_logs.batch import run_batches
    from conveyor.workloads.movement_logs.config import MovementLogsSettings
    from conveyor.workloads.movement_logs.models import MovementIn, encode_item
    from conveyor.workloads.movement_logs.queue import RedisLogQueue
    from conveyor.workloads.movement_logs.tables import logs_table, metadata

    name = f"bench_logs_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(pg_admin, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    url = pg_admin.rsplit("/", 1)[0] + "/" + name
    engine = create_engine_for(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        metadata.create_all(engine)
        redis_lib.Redis.from_url(redis_url).flushdb()
        queue = RedisLogQueue(redis_url, "bench_movement_logs")
        t = time.time()
        items = [
            encode_item(
                MovementIn(
                    user_id=f"USER{i % 500}",
                    track_id=i,
                    bbox=[i % 900, 10, i % 900 + 50, 90],
                    state="walking",
                    store="Store A",
                ),
                "local",
                t,
            )
            for i in range(n)
        ]
        for start in range(0, n, 5000):
            queue.push([text for _, text in items[start : start + 5000]], t)
        t0 = time.perf_counter()
        batch = MovementLogsSettings().batch_size
        result = run_batches(engine, queue, max_items=batch, max_batches=10_000)
        ours = n / (time.perf_counter() - t0)
        with engine.connect() as conn:
            ids = set(conn.execute(sa.select(logs_table.c.event_id)).scalars())
        if result.moved != n or ids != {e for e, _ in items}:
            raise RuntimeError(f"the drain lost or doubled logs: moved {result.moved} of {n}")
        rows = [json.loads(text) for _, text in items]
        with engine.begin() as conn:
            conn.execute(logs_table.delete())
        raw = psycopg.connect(url)
        t0 = time.perf_counter()
        with raw.transaction(), raw.cursor() as cur:
            cur.executemany(
                "INSERT INTO movement_logs (event_id, tenant, user_id, track_id, bbox, state, store, timestamp,"
                " received_at, stored_at, batch_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        r["event_id"],
                        r["tenant"],
                        r["user_id"],
                        r["track_id"],
                        json.dumps(r["bbox"]),
                        r["state"],
                        r["store"],
                        r["timestamp"],
                        r["received_at"],
                        t,
                        "plain",
                    )
                    for r in rows
                ],
            )
        plain = n / (time.perf_counter() - t0)
        raw.close()
        queue.close()
    finally:
        engine.dispose()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    return ours, plain


# -- where the time of one add-movement goes (in process, no sockets) ----------------------------


async def _asgi_rate(api: Any, path: str, n: int) -> float:
    """Microseconds a POST of the seed's body takes through ``api`` called as an ASGI app."""
    body = json.dumps(SEED_BODY).encode()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    for _ in range(100):
        await api(dict(scope), receive, send)
    t0 = time.perf_counter()
    for _ in range(n):
        await api(dict(scope), receive, send)
    if sent[-2].get("status") != 202:
        raise RuntimeError(f"{path}: {sent[-1]}")
    return (time.perf_counter() - t0) / n * 1e6


def attribution(redis_url: str, n: int = 1000, rounds: int = 3) -> None:
    """The bare endpoint, the workload's router alone in a bare app, and the full Conveyor app."""
    os.environ["BENCH_REDIS"] = redis_url
    os.environ["CONVEYOR_MOVEMENT_LOGS_REDIS_URL"] = redis_url
    from conveyor import Conveyor, Settings
    from conveyor.api.errors import install_error_handlers
    from conveyor.api.main import create_app
    from conveyor.workloads.movement_logs.routes import router

    conveyor = Conveyor(
        Settings(
            data_dir=Path(tempfile.mkdtemp(prefix="conveyor-logs-bench-")),
            workloads=["system", "movement_logs"],
            scheduler=False,
            concurrency=1,
        )
    )
    full = create_app(conveyor)
    alone = FastAPI()
    alone.state.conveyor = conveyor
    install_error_handlers(alone)
    alone.include_router(router)
    bare = bare_async_app()

    async def run() -> None:
        async with full.router.lifespan_context(full), alone.router.lifespan_context(alone):
            for _ in range(rounds):
                b = await _asgi_rate(bare, "/push", n)
                a = await _asgi_rate(alone, "/api/logs/add-movement/", n)
                f = await _asgi_rate(full, "/api/logs/add-movement/", n)
                print(f"  bare async LPUSH {b:6.0f} µs   workload router alone {a:6.0f} µs   full app {f:6.0f} µs")

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--list-size", type=int, default=100)
    parser.add_argument("--drain", type=int, default=100_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/8")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--attribution", action="store_true", help="only: where one add-movement's time goes")
    args = parser.parse_args()
    import redis as redis_lib

    if args.attribution:
        print("# one POST of the seed's body, ASGI apps called in process (no sockets), µs a request")
        attribution(args.redis)
        return

    redis_lib.Redis.from_url(args.redis).flushdb()
    data = tempfile.mkdtemp(prefix="conveyor-logs-bench-")
    env = {
        "BENCH_REDIS": args.redis,
        "BENCH_DATA": data,
        "CONVEYOR_MOVEMENT_LOGS_REDIS_URL": args.redis,
        "CONVEYOR_MOVEMENT_LOGS_QUEUE_NAME": "bench_movement_logs",
        "CONVEYOR_MOVEMENT_LOGS_MAX_LIST": str(max(args.list_size, 1000)),
    }
    print(f"# movement logs  cores={os.cpu_count()}  connections={args.connections}  requests={args.requests}")
    print("\n# POST one log a request (seed 003's body), requests/s")
    servers = (
        ("bare async LPUSH", "bare_async_app", "/push"),
        ("bare sync LPUSH", "bare_sync_app", "/push"),
        ("conveyor add-movement", "conveyor_app", "/api/logs/add-movement/"),
    )
    # All three are up at once and take turns, ROUNDS times, so a change in the shared machine's
    # load falls on each of them alike; each one's figure is the median of its rounds.
    rounds: dict[str, list[float]] = {label: [] for label, _, _ in servers}
    with contextlib.ExitStack() as stack:
        ports = {label: stack.enter_context(serve(factory, env)) for label, factory, _ in servers}
        for label, _, path in servers:
            load(ports[label], path, SEED_BODY, 500, args.connections)  # warm-up: imports, pools, connections
        for _ in range(ROUNDS):
            for label, _, path in servers:
                rounds[label].append(load(ports[label], path, SEED_BODY, args.requests // ROUNDS, args.connections))
    rates = {label: statistics.median(r) for label, r in rounds.items()}
    for label, r in rounds.items():
        print(f"  {label:<24} {rates[label]:9.0f} req/s   (rounds: {', '.join(f'{x:.0f}' for x in r)})")
    ours = rates["conveyor add-movement"]
    for label in ("bare async LPUSH", "bare sync LPUSH"):
        ratio = ours / rates[label]
        print(
            f"  conveyor ÷ {label:<18} {ratio:5.2f}×  (aim ≥ {AIM_RATIO}×: {'met' if ratio >= AIM_RATIO else 'MISSED'})"
        )
    print(f"\n# POST lists of {args.list_size} logs, logs/s")
    with serve("conveyor_app", env) as port:
        lists = max(args.connections, args.requests // args.list_size)
        load(port, "/api/logs/add-movement/", [SEED_BODY] * args.list_size, args.connections * 4, args.connections)
        rate = load(port, "/api/logs/add-movement/", [SEED_BODY] * args.list_size, lists, args.connections)
    print(f"  conveyor add-movement    {rate * args.list_size:9.0f} logs/s  ({rate:.0f} req/s)")
    print(f"\n# drain {args.drain} logs from Redis into PostgreSQL, logs/s")
    drained, plain = drain(args.drain, args.redis, args.postgres)
    print(f"  run_batches (COPY; stored ids: ON CONFLICT)  {drained:9.0f} logs/s   (count and ids checked)")
    print(f"  plain executemany of the same rows          {plain:9.0f} logs/s")
    print(
        f"  ratio {drained / plain:.2f}×   aim ≥ {AIM_DRAIN:.0f} logs/s: {'met' if drained >= AIM_DRAIN else 'MISSED'}"
    )
    redis_lib.Redis.from_url(args.redis).flushdb()


if __name__ == "__main__":
    main()
