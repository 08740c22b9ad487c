"""Recovery at scale: a pool SIGKILLed with a large backlog queued, then a new pool; its drain rate beside a normal one.

    python -m bench.recovery [--tasks 100000] [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

1. **normal drain**: a running pool (2 worker processes) is handed ``--tasks``
   no-op tasks with ``submit_many`` in batches of 1,000; the rate is tasks ÷
   the time from the first submit to the last SUCCESS.
2. **after SIGKILL**: a child process (a pool like ``conveyor serve``'s)
   submits ``--tasks`` tasks and is SIGKILLed, its workers with it, right
   after the last submit returned; a new pool on the same database is
   started and timed until every task left unfinished has succeeded.

Each phase runs on a fresh PostgreSQL database (``--admin``), or on a fresh
SQLite file with ``--sqlite``. Every task must end SUCCESS (counted in the
store), or the run fails.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.postgres_peers import fresh_database

REPO = Path(__file__).resolve().parents[1]
_CHILD = """
import sys, time
from pathlib import Path
from conveyor import Conveyor, Settings, SubmitRequest
url, n = sys.argv[1], int(sys.argv[2])
settings = Settings(database_url=url, data_dir=Path(sys.argv[3]), concurrency=2, scheduler=False,
                    max_unfinished_per_tenant=10**8, workloads=["system", "bench.noop_workload"])
app = Conveyor(settings).start()
for i in range(0, n, 1000):
    app.manager.submit_many([SubmitRequest("bench.noop")] * min(1000, n - i))
print("queued", flush=True)
time.sleep(3600)
"""


def _app(url: str) -> Any:
    from conveyor import Conveyor, Settings

    settings = Settings(
        database_url=url,
        data_dir=Path(tempfile.mkdtemp(prefix="conveyor-recovery-")),
        concurrency=2,
        scheduler=False,
        max_unfinished_per_tenant=10**8,
        workloads=["system", "bench.noop_workload"],
    )
    return Conveyor(settings)


def _counts(app: Any) -> dict[str, int]:
    totals: dict[str, int] = {}
    for q in app.store.queue_stats():
        for state, n in q.counts.items():
            totals[state] = totals.get(state, 0) + n
    return totals


def _wait_all_succeeded(app: Any, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _counts(app).get("SUCCESS", 0) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {_counts(app)} after {timeout} s")
        time.sleep(0.05)


def normal_drain(url: str, n: int) -> float:
    from conveyor import SubmitRequest

    app = _app(url).start()
    try:
        t0 = time.perf_counter()
        for i in range(0, n, 1000):
            app.manager.submit_many([SubmitRequest("bench.noop")] * min(1000, n - i))
        _wait_all_succeeded(app, n, 1800)
        return n / (time.perf_counter() - t0)
    finally:
        app.stop(graceful=False)


def after_kill(url: str, n: int) -> tuple[float, int]:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, url, str(n), tempfile.mkdtemp(prefix="conveyor-recovery-")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    os.killpg(child.pid, signal.SIGKILL)
    child.wait(30)
    child.stdout.close()
    if line != "queued":
        raise RuntimeError(f"the first pool did not queue its tasks: {line!r}")
    app = _app(url)
    app.store.open()
    done_before = _counts(app).get("SUCCESS", 0)
    left = n - done_before
    t0 = time.perf_counter()
    app.start()
    try:
        _wait_all_succeeded(app, n, 1800)
        return left / (time.perf_counter() - t0), left
    finally:
        app.stop(graceful=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()

    def run(phase: Any) -> Any:
        if args.sqlite:
            return phase(f"sqlite:///{tempfile.mkdtemp(prefix='conveyor-recovery-')}/conveyor.db", args.tasks)
        with fresh_database(args.admin) as url:
            return phase(url, args.tasks)

    store = "sqlite" if args.sqlite else "postgresql"
    print(f"# recovery  tasks={args.tasks}  store={store}  cores={os.cpu_count()}")
    normal = run(normal_drain)
    print(f"normal drain (submit_many, pool running)        {normal:8.0f} tasks/s", flush=True)
    rate, left = run(after_kill)
    print(f"after SIGKILL, new pool ({left} tasks left)  {rate:8.0f} tasks/s")
    print(f"ratio (after kill ÷ normal): {rate / normal:.2f}×  (aim ≥ 0.8×)")


if __name__ == "__main__":
    main()
