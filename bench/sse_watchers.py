"""Many live watchers on one ``conveyor serve``: every watcher sees every state, and how late.

    python -m bench.sse_watchers [--watchers 1000] [--tasks 20] [--runs 3]

Method: ``conveyor serve`` (local pool of ``--concurrency`` processes,
SQLite) in a subprocess. ``--tasks`` ``system.sleep`` tasks (1 s in 5
progress steps) are submitted with a delay, so that they wait while
``--watchers`` clients, spread evenly over the tasks, open
``GET /api/v1/tasks/{id}/events`` from ``--clients`` processes (asyncio,
one connection per watcher). Once every stream has its first event the
tasks start; the run ends when every stream has its ``end`` event or after
``--timeout`` seconds.

Each event carries the time of the step it reports (``updated_at``: when
the worker reported the progress, when the pool recorded the outcome); its
*delay* is the moment the watcher parsed it minus that time, on one
machine's clock. Reported: watchers that saw their task's final state
(SUCCESS) out of all, events received, and the p50/p99/max delay of every
event and of the final ones. The aim (issue 15): every watcher sees every
final state, p99 event delay ≤ 100 ms. No peer serves live progress to
browsers (Celery + Flower polls), so there is no ratio; the figures stand
alone.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.http import API_KEY, _env, _free_port, server

SLEEP = {"seconds": 1.0, "steps": 5}


@dataclass
class Seen:
    """What one client process's watchers received."""

    delays_ms: list[float] = field(default_factory=list)
    final_delays_ms: list[float] = field(default_factory=list)
    finished: int = 0  # watchers whose stream ended with the task SUCCESS
    errors: list[str] = field(default_factory=list)


def _epoch(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def _watch(client: httpx.AsyncClient, url: str, opened: asyncio.Event, seen: Seen, ready: list[int]) -> None:
    event = ""
    try:
        async with client.stream("GET", url) as reply:
            if reply.status_code != 200:
                seen.errors.append(f"{reply.status_code}: {(await reply.aread())[:200]!r}")
                return
            first = True
            async for line in reply.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    now = time.time()
                    data = json.loads(line[5:])
                    if first:
                        first = False
                        ready[0] += 1
                        if ready[0] == ready[1]:
                            opened.set()
                        continue  # the state when the stream opened, not a change
                    delay = (now - _epoch(data["updated_at"])) * 1000
                    if event == "end":
                        seen.final_delays_ms.append(delay)
                        if data["status"] == "SUCCESS":
                            seen.finished += 1
                        return
                    seen.delays_ms.append(delay)
    except httpx.HTTPError as e:
        seen.errors.append(f"{type(e).__name__}: {e}")


async def _client(base: str, task_ids: list[str], opened_q: Any, timeout: float) -> Seen:
    seen = Seen()
    opened = asyncio.Event()
    ready = [0, len(task_ids)]
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=base, limits=limits, headers=headers, timeout=None) as client:
        watchers = [
            asyncio.create_task(_watch(client, f"/api/v1/tasks/{t}/events", opened, seen, ready)) for t in task_ids
        ]
        await asyncio.wait_for(opened.wait(), timeout)
        opened_q.put(len(task_ids))
        _, pending = await asyncio.wait(watchers, timeout=timeout)
        for p in pending:
            p.cancel()
        if pending:
            seen.errors.append(f"{len(pending)} streams had not ended after {timeout:g} s")
    return seen


def _client_process(base: str, task_ids: list[str], opened_q: Any, out_q: Any, timeout: float) -> None:
    try:
        seen = asyncio.run(_client(base, task_ids, opened_q, timeout))
    except Exception as e:  # reported, not hidden: the run counts its watchers
        seen = Seen(errors=[f"client process: {type(e).__name__}: {e}"])
        opened_q.put(0)
    out_q.put(seen)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def one_run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = _env(
        CONVEYOR_API_KEYS=f"{API_KEY}=bench",
        CONVEYOR_TENANT_RATE="0",
        CONVEYOR_TENANT_MAX_STREAMS="0",
        CONVEYOR_CONCURRENCY=str(args.concurrency),
    )
    data = folder / f"data-{time.monotonic_ns()}"
    cmd = ["python", "-m", "conveyor", "serve", "--port", str(port), "--data-dir", str(data)]
    with server(cmd, env, f"{base}/livez", folder / "serve.log"):
        auth = {"Authorization": f"Bearer {API_KEY}"}
        body = {"task_type": "system.sleep", "params": SLEEP, "delay": args.start_after}
        submit = f"{base}/api/v1/tasks"
        tasks = [httpx.post(submit, json=body, headers=auth).json()["task_id"] for _ in range(args.tasks)]
        watched = [tasks[i % len(tasks)] for i in range(args.watchers)]
        ctx = multiprocessing.get_context("spawn")
        opened_q, out_q = ctx.Queue(), ctx.Queue()
        shares = [watched[i :: args.clients] for i in range(args.clients)]
        procs = [
            ctx.Process(target=_client_process, args=(base, share, opened_q, out_q, args.timeout)) for share in shares
        ]
        t0 = time.monotonic()
        for p in procs:
            p.start()
        opened = sum(opened_q.get(timeout=args.timeout) for _ in procs)
        open_s = time.monotonic() - t0
        seen = [out_q.get(timeout=args.timeout + 60) for _ in procs]
        for p in procs:
            p.join(10)
    delays = [d for s in seen for d in s.delays_ms]
    finals = [d for s in seen for d in s.final_delays_ms]
    return {
        "watchers": args.watchers,
        "opened": opened,
        "open_s": round(open_s, 2),
        "finished": sum(s.finished for s in seen),
        "events": len(delays) + len(finals),
        "p50_ms": round(_pct(delays + finals, 0.5), 1),
        "p99_ms": round(_pct(delays + finals, 0.99), 1),
        "max_ms": round(max(delays + finals, default=float("nan")), 1),
        "final_p50_ms": round(_pct(finals, 0.5), 1),
        "final_p99_ms": round(_pct(finals, 0.99), 1),
        "errors": [e for s in seen for e in s.errors][:5],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4, help="watcher processes")
    parser.add_argument("--concurrency", type=int, default=4, help="the local pool's worker processes")
    parser.add_argument("--start-after", type=float, default=20.0, help="the tasks' delay: time to open the streams")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    print(
        f"# sse_watchers  watchers={args.watchers}  tasks={args.tasks}  clients={args.clients}  "
        f"concurrency={args.concurrency}  runs={args.runs}  load {os.getloadavg()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for _ in range(args.runs):
            row = one_run(args, Path(tmp))
            runs.append(row)
            print(json.dumps(row))
    by_p99 = sorted(runs, key=lambda r: r["p99_ms"])
    median = by_p99[len(by_p99) // 2]
    print("# median run by p99 event delay")
    print(
        f"watchers {median['watchers']}: opened {median['opened']} in {median['open_s']} s, final state seen by "
        f"{median['finished']}; {median['events']} events, delay p50 {median['p50_ms']} ms, p99 {median['p99_ms']} ms, "
        f"max {median['max_ms']} ms; final states p50 {median['final_p50_ms']} ms, p99 {median['final_p99_ms']} ms"
    )
    print(f"# aim: every watcher sees its final state, p99 ≤ 100 ms; load after {os.getloadavg()}")
    p99s = [r["p99_ms"] for r in runs]
    print(f"# p99 of each run: {p99s}, median {statistics.median(p99s)} ms")


if __name__ == "__main__":
    main()
