"""HTTP throughput of ``conveyor serve`` beside the bare FastAPI apps a user
would write instead.

    python -m bench.http --runs 3 --duration 15

Method: each server is a real subprocess (``conveyor serve``; uvicorn over
``bench.http_apps`` for the peers), all started at once. ``wrk`` at 32
connections warms each up, then runs ``--runs`` rounds, each round one timed
run of every row in turn (so the drifting load of a shared machine falls on
every row alike); the median run (by requests/s) is reported with its p50/p99.
Conveyor rows: ``POST /api/v1/tasks`` of ``system.ping`` with a tenant's API
key, the status GET and the result GET of one finished task, on SQLite and on
a fresh PostgreSQL database. After the submit runs the store is read until
every accepted task is SUCCESS (the ``ended`` column). Peers: an empty
endpoint (POST and GET), one Redis ``LPUSH`` (``ended`` = list length) and
Celery ``delay()`` (a Celery worker, started once wrk is done so it takes no
CPU from the endpoint, runs them all: ``ended`` = its counter). ``non2xx``
counts non-2xx answers and socket errors.

The tenant rate limit and unfinished-task cap are lifted for the run
(``CONVEYOR_TENANT_RATE=0``): they are policies, and 15 s at full speed would
trip both.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
API_KEY = "bench-key"
SUBMIT_BODY = {"task_type": "system.ping", "params": {}}
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Run:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int


@dataclass
class Row:
    name: str
    runs: list[Run]
    accepted: int = 0
    #: records the store (or list, or broker) holds after the run: accepted ones, whether wrk saw the answer or not
    stored: int | None = None
    ended: int | None = None

    @property
    def median(self) -> Run:
        ordered = sorted(self.runs, key=lambda r: r.rps)
        return ordered[len(ordered) // 2]

    @property
    def non2xx(self) -> int:
        return sum(r.non2xx for r in self.runs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if m is None:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> Run:
    """requests, requests/s, p50, p99 and failures out of ``wrk --latency``'s report."""
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(bad.group(1)) if bad else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        non2xx += sum(int(g) for g in errors.groups())
    return Run(requests=requests, rps=rps, p50_ms=p50, p99_ms=p99, non2xx=non2xx)


def _lua(method: str, body: dict[str, Any] | None, headers: dict[str, str], folder: Path) -> Path:
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        lines.append(f"wrk.body = {json.dumps(json.dumps(body))}")
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    path = folder / f"wrk-{uuid.uuid4().hex[:8]}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def wrk(url: str, script: Path, *, connections: int, threads: int, duration: float) -> Run:
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


@dataclass
class Target:
    """One row to measure: a URL and its wrk script; ``submits`` counts its 2xx answers as accepted tasks."""

    name: str
    url: str
    script: Path
    submits: bool = False
    row: Row = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.row = Row(self.name, [])


def measure_all(targets: list[Target], args: argparse.Namespace) -> None:
    """A warm-up of each, then ``args.runs`` rounds, each round one run of every target in turn.

    Interleaved so that the load of a shared machine, which drifts over minutes, falls on every
    row alike rather than on whichever ran during a busy spell.
    """
    for t in targets:
        warm = wrk(t.url, t.script, connections=args.connections, threads=args.threads, duration=args.warmup)
        t.row.accepted += warm.requests - warm.non2xx if t.submits else 0
    for n in range(args.runs):
        print(f"round {n + 1}/{args.runs}  load {os.getloadavg()[0]:.1f}", flush=True)
        for t in targets:
            run = wrk(t.url, t.script, connections=args.connections, threads=args.threads, duration=args.duration)
            t.row.runs.append(run)
            t.row.accepted += run.requests - run.non2xx if t.submits else 0
            print(
                f"  {t.name:<34} {run.rps:8.0f} req/s  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  "
                f"non2xx {run.non2xx}",
                flush=True,
            )


@contextlib.contextmanager
def server(cmd: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[:4]} exited {proc.returncode}: {log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(ready_url, timeout=2).status_code < 500:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{cmd[:4]} not ready after 60 s: {log.read_text()[-2000:]}")
                time.sleep(0.2)
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.update(extra)
    return env


def _count_states(url: str) -> dict[str, int]:
    import sqlalchemy as sa

    from conveyor.stores.sql_schema import create_engine_for

    engine = create_engine_for(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT state, count(*) FROM conveyor_tasks WHERE type = 'system.ping' GROUP BY state")
            ).all()
    finally:
        engine.dispose()
    return {str(s): int(n) for s, n in rows}


def _wait_ended(url: str, expected: int, timeout: float = 300) -> int:
    """Until ``expected`` ping tasks are SUCCESS (or nothing moves for 30 s); the SUCCESS count."""
    deadline = time.monotonic() + timeout
    last, moved = -1, time.monotonic()
    while True:
        done = _count_states(url).get("SUCCESS", 0)
        if done >= expected or time.monotonic() > deadline or time.monotonic() - moved > 30:
            return done
        if done != last:
            last, moved = done, time.monotonic()
        time.sleep(0.25)


@dataclass
class Conveyor:
    store: str
    url: str
    submit: Target
    reads: list[Target]


def start_conveyor(
    stack: contextlib.ExitStack, store: str, url: str, args: argparse.Namespace, folder: Path
) -> Conveyor:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "conveyor", "serve", "--port", str(port), "--data-dir", str(folder / f"data-{store}")]
    cmd += ["--database-url", url, *args.serve_arg]
    env = _env(
        CONVEYOR_API_KEYS=f"{API_KEY}=bench",
        CONVEYOR_TENANT_RATE="0",
        CONVEYOR_MAX_UNFINISHED_PER_TENANT="100000000",
    )
    auth = {"Authorization": f"Bearer {API_KEY}"}
    stack.enter_context(server(cmd, env, f"{base}/livez", folder / f"serve-{store}.log"))
    one = httpx.post(f"{base}/api/v1/tasks", json=SUBMIT_BODY, headers=auth).json()["task_id"]
    _wait_ended(url, 1)
    get = _lua("GET", None, auth, folder)
    submit = Target(f"conveyor {store} submit", f"{base}/api/v1/tasks", _lua("POST", SUBMIT_BODY, auth, folder), True)
    reads = [Target(f"conveyor {store} {w} GET", f"{base}/api/v1/tasks/{one}/{w}/", get) for w in ("status", "result")]
    return Conveyor(store, url, submit, reads)


def start_peers(stack: contextlib.ExitStack, args: argparse.Namespace, folder: Path, queue: str) -> list[Target]:
    peer_env = _peer_env(args, queue)
    targets = []
    for app in ("empty", "lpush", "celery"):
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "uvicorn", f"bench.http_apps:{app}", "--port", str(port)]
        cmd += ["--log-level", "warning", "--no-access-log"]
        stack.enter_context(server(cmd, peer_env, f"{base}/openapi.json", folder / f"peer-{app}.log"))
        targets.append(Target(f"fastapi {app} POST", f"{base}/tasks", _lua("POST", SUBMIT_BODY, {}, folder), True))
        if app == "empty":
            targets.append(Target("fastapi empty GET", f"{base}/tasks/x/status/", _lua("GET", None, {}, folder)))
    return targets


def _peer_env(args: argparse.Namespace, queue: str) -> dict[str, str]:
    return _env(
        PEER_BROKER=args.redis,
        PEER_COUNTER_URL=args.redis,
        PEER_QUEUE=queue,
        PEER_COUNTER=f"{queue}:done",
        PEER_LIST=f"{queue}:lpush",
    )


def count_ended(
    conveyors: list[Conveyor], peers: list[Target], args: argparse.Namespace, folder: Path, queue: str
) -> None:
    """Every row's accepted tasks, counted where they ended (the store, the list, the Celery worker's counter)."""
    import redis

    for c in conveyors:
        c.submit.row.stored = sum(_count_states(c.url).values()) - 1  # the one the GETs read
        c.submit.row.ended = _wait_ended(c.url, c.submit.row.stored + 1) - 1
    r = redis.Redis.from_url(args.redis)
    for t in peers:
        if t.name == "fastapi lpush POST":
            t.row.stored = t.row.ended = int(r.llen(f"{queue}:lpush"))
        elif t.name == "fastapi celery POST":
            t.row.stored = int(r.llen(queue))
            t.row.ended = _drain_celery(r, _peer_env(args, queue), queue, t.row.stored, folder)
    r.delete(f"{queue}:lpush", f"{queue}:done", queue)


def _drain_celery(r: Any, env: dict[str, str], queue: str, expected: int, folder: Path) -> int:
    cmd = [sys.executable, "-m", "celery", "-A", "bench.peers.apps:celery_app", "worker", "-P", "prefork", "-c", "2"]
    cmd += ["-Q", queue, "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"]
    with (folder / "celery-worker.log").open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        try:
            last, moved = -1, time.monotonic()
            while True:
                done = int(r.get(f"{queue}:done") or 0)
                if done >= expected or time.monotonic() - moved > 30:
                    return done
                if done != last:
                    last, moved = done, time.monotonic()
                time.sleep(0.25)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


@contextlib.contextmanager
def fresh_postgres() -> Iterator[str]:
    import psycopg

    name = f"conveyor_httpbench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def report(rows: list[Row]) -> None:
    by = {r.name: r for r in rows}
    print("\n# rows (median of runs by req/s)")
    for r in rows:
        m = r.median
        ended = "" if r.ended is None else f"  2xx {r.accepted}  stored {r.stored}  ended {r.ended}"
        print(
            f"{r.name:<34} {m.rps:8.0f} req/s  p50 {m.p50_ms:6.2f} ms  p99 {m.p99_ms:6.2f} ms  "
            f"non2xx {r.non2xx}{ended}  (runs: {', '.join(f'{x.rps:.0f}' for x in r.runs)})"
        )
    print("\n# ratios (Conveyor ÷ peer; > 1 means Conveyor is faster)")
    empty_post, empty_get, celery = (
        by.get(n) for n in ("fastapi empty POST", "fastapi empty GET", "fastapi celery POST")
    )
    for store in ("sqlite", "postgresql"):
        sub, st, res = (by.get(f"conveyor {store} {w}") for w in ("submit", "status GET", "result GET"))
        if sub is None:
            continue
        parts = []
        if celery:
            parts.append(f"submit {sub.median.rps / celery.median.rps:.2f}× celery delay() (aim ≥ 3)")
        if empty_post:
            parts.append(f"submit {sub.median.rps / empty_post.median.rps:.2f}× empty POST (aim ≥ 0.5)")
        if empty_get and st:
            parts.append(f"status {st.median.rps / empty_get.median.rps:.2f}× empty GET (aim ≥ 0.6)")
        if empty_get and res:
            parts.append(f"result {res.median.rps / empty_get.median.rps:.2f}× empty GET")
        print(f"{store}: " + ";  ".join(parts))
        worst = max(r.median.p99_ms for r in (sub, st, res) if r is not None)
        print(f"{store}: worst p99 {worst:.1f} ms (aim ≤ 30)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=15)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stores", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--redis", default=os.environ.get("CONVEYOR_TEST_REDIS", "redis://127.0.0.1:6379") + "/11")
    p.add_argument("--serve-arg", action="append", default=[], help="extra argument to `conveyor serve`")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (server logs)")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed")
    folder = Path(tempfile.mkdtemp(prefix="conveyor-httpbench-"))
    print(
        f"# http  connections={args.connections}  duration={args.duration}s  runs={args.runs}  "
        f"cores={os.cpu_count()}  serve args={args.serve_arg}  load: {os.getloadavg()}",
        flush=True,
    )
    queue = f"http-bench-{uuid.uuid4().hex[:6]}"
    try:
        with contextlib.ExitStack() as stack:
            conveyors = []
            for store in [s.strip() for s in args.stores.split(",") if s.strip()]:
                url = f"sqlite:///{folder / 'bench.db'}" if store == "sqlite" else stack.enter_context(fresh_postgres())
                conveyors.append(start_conveyor(stack, store, url, args, folder))
            peers = start_peers(stack, args, folder, queue) if args.peers else []
            targets = [t for c in conveyors for t in (c.submit, *c.reads)] + peers
            measure_all(targets, args)
            count_ended(conveyors, peers, args, folder, queue)
            rows = [t.row for t in targets]
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"kept {folder}")
    report(rows)
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
