"""Round trip: a submit until a waiting ``wait()`` has the final record, p50 and p99.

    python -m bench.round_trip [--tasks 300] [--database-url sqlite:///...]
    python -m bench.round_trip --celery redis|amqp [--database-url postgresql://...]

One ``system.ping`` at a time: ``submit()`` then ``wait()``, timed from
before the submit to the moment ``wait()`` returns the SUCCESS record.
Local: through a running local pool (2 worker processes); aims (issue 15)
p50 ≤ 3 ms, p99 ≤ 10 ms. ``--celery``: through one ``celery -A
conveyor.worker`` (prefork, 2 processes) on that broker, the outcome written
by the worker and reaching ``wait()`` in this process through the notifier
(``conveyor/notify.py``); aim p50 ≤ 30 ms.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--celery", choices=["redis", "amqp"], help="through a Celery worker on this broker")
    args = parser.parse_args()
    from conveyor import Conveyor, Settings, Status

    data_dir = Path(tempfile.mkdtemp(prefix="conveyor-rt-"))
    worker = None
    if args.celery:
        from bench.celery_throughput import BROKERS, _prepare, start_worker

        url = args.database_url or "postgresql://postgres@127.0.0.1:5432/test"
        _prepare(args.celery, url)
        worker = start_worker(BROKERS[args.celery], url, data_dir)
        settings = Settings(
            data_dir=data_dir,
            database_url=url,
            executor="celery",
            broker_url=BROKERS[args.celery],
            scheduler=False,
            workloads=["system", "bench.noop_workload"],
        )
    else:
        settings = Settings(
            data_dir=data_dir, database_url=args.database_url, concurrency=2, scheduler=False, workloads=["system"]
        )
    app = Conveyor(settings).start()
    try:
        m = app.manager
        for _ in range(20):  # warm up the workers and the statement caches
            m.wait(m.submit("system.ping"), timeout=30)
        times = []
        for _ in range(args.tasks):
            t0 = time.perf_counter()
            record = m.wait(m.submit("system.ping"), timeout=30)
            times.append(time.perf_counter() - t0)
            assert record.state is Status.SUCCESS
    finally:
        app.stop(graceful=False)
        if worker is not None:
            from bench.peers.run import stop_group

            stop_group(worker, 30)
    times.sort()
    p50 = statistics.median(times) * 1000
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))] * 1000
    print(f"# round_trip  tasks={args.tasks}  store={settings.store_kind}  executor={settings.executor}")
    if args.celery:
        kind = app.notifier.kind if app.notifier is not None else "none (polling)"
        print(f"celery[{args.celery}] submit → wait()   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   (aim p50 ≤ 30 ms)")
        print(f"notifier: {kind}")
    else:
        print(f"local submit → wait()   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   (aims ≤ 3 ms / ≤ 10 ms)")


if __name__ == "__main__":
    main()
