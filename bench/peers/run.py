"""No-op throughput of Celery, Dramatiq, Huey and RQ on this machine, measured the same way for each.

    python -m bench.peers.run --tasks 5000 --peers celery-redis,dramatiq,huey,rq

Method: start the peer's real worker as a subprocess and wait until it is
ready (a warm-up task has run); then enqueue N no-op tasks from this process
and time from the first enqueue to the moment the N-th task has run (each
task INCRs a Redis counter, polled every 10 ms). ``enqueue`` is the time to
send, ``drain`` the time from the last send to the last completion.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[2]


@dataclass
class PeerResult:
    name: str
    tasks: int
    enqueue_seconds: float
    drain_seconds: float
    total_seconds: float

    @property
    def tasks_per_second(self) -> float:
        return self.tasks / self.total_seconds

    @property
    def drain_per_second(self) -> float:
        return self.tasks / max(self.drain_seconds, 1e-9)


def _env(broker: str, queue: str, counter: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PEER_BROKER": broker, "PEER_QUEUE": queue, "PEER_COUNTER": counter}


def _measure(
    name: str, n: int, broker: str, worker_cmd: list[str], enqueue: Callable[[int], None], warm: Callable[[], None]
) -> PeerResult:
    queue = f"peer-{uuid.uuid4().hex[:8]}"
    counter = f"{queue}:done"
    os.environ.update(PEER_BROKER=broker, PEER_QUEUE=queue, PEER_COUNTER=counter)
    r = redis.Redis.from_url("redis://127.0.0.1:6379/11")
    r.delete(counter)
    cmd = [c.replace("{queue}", queue) for c in worker_cmd]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=_env(broker, queue, counter),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _reload_apps()
        warm()
        _wait(r, counter, 1, 60, proc)
        r.delete(counter)
        t0 = time.perf_counter()
        enqueue(n)
        t1 = time.perf_counter()
        _wait(r, counter, n, max(60.0, n / 50), proc)
        t2 = time.perf_counter()
    finally:
        stop_group(proc, 20)
        r.delete(counter)
    return PeerResult(name, n, t1 - t0, t2 - t1, t2 - t0)


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to the worker's process group (its pool too), SIGKILL after ``timeout`` seconds."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait(r: redis.Redis, counter: str, n: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while int(r.get(counter) or 0) < n:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {int(r.get(counter) or 0)} of {n} tasks ran in {timeout:.0f}s")
        time.sleep(0.01)


def _reload_apps() -> object:
    import importlib

    import bench.peers.apps as apps

    return importlib.reload(apps)


def celery(
    n: int,
    broker: str = "redis",
    pool: str = "threads",
    concurrency: int = 4,
    *,
    safe: bool = False,
    backend: bool = False,
) -> PeerResult:
    url = "redis://127.0.0.1:6379/11" if broker == "redis" else "amqp://guest:guest@127.0.0.1:5672//"
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.peers.apps:celery_app",
        "worker",
        "-P",
        pool,
        "-c",
        str(concurrency),
        "-Q",
        "{queue}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "WARNING",
    ]

    def send(k: int) -> None:
        apps = sys.modules["bench.peers.apps"]
        for _ in range(k):
            apps.celery_noop.apply_async(queue=os.environ["PEER_QUEUE"])  # type: ignore[attr-defined]

    os.environ["PEER_SAFE"] = "1" if safe else "0"
    os.environ["PEER_BACKEND"] = "1" if backend else "0"
    label = f"celery[{broker}] -P {pool} -c {concurrency}" + (" acks_late prefetch 1" if safe else "")
    label += " + redis result backend" if backend else ""
    try:
        result = _measure(label, n, url, cmd, send, lambda: send(1))
    finally:
        os.environ.pop("PEER_SAFE")
        os.environ.pop("PEER_BACKEND")
        _reload_apps()
    return result


def dramatiq(n: int, processes: int = 2, threads: int = 8) -> PeerResult:
    cmd = [
        sys.executable,
        "-m",
        "dramatiq",
        "bench.peers.apps",
        "-p",
        str(processes),
        "-t",
        str(threads),
        "-Q",
        "{queue}",
    ]

    def send(k: int) -> None:
        apps = sys.modules["bench.peers.apps"]
        for _ in range(k):
            apps.dramatiq_noop.send()  # type: ignore[attr-defined]

    return _measure(f"dramatiq -p {processes} -t {threads}", n, "redis://127.0.0.1:6379/11", cmd, send, lambda: send(1))


def huey(n: int, workers: int = 2, worker_type: str = "process") -> PeerResult:
    cmd = [
        sys.executable,
        "-m",
        "huey.bin.huey_consumer",
        "bench.peers.apps.huey",
        "-w",
        str(workers),
        "-k",
        worker_type,
        "-q",
    ]

    def send(k: int) -> None:
        apps = sys.modules["bench.peers.apps"]
        for _ in range(k):
            apps.huey_noop()  # type: ignore[attr-defined]

    return _measure(f"huey -w {workers} -k {worker_type}", n, "redis://127.0.0.1:6379/11", cmd, send, lambda: send(1))


def rq(n: int, workers: int = 2) -> PeerResult:
    # RQ's default worker forks a process per job (~10 jobs/s here); SimpleWorker
    # runs jobs in the worker process, which is RQ at its fastest.
    cmd = [
        sys.executable,
        "-m",
        "rq.cli",
        "worker-pool",
        "-n",
        str(workers),
        "-w",
        "rq.worker.SimpleWorker",
        "-u",
        "redis://127.0.0.1:6379/11",
        "{queue}",
    ]

    def send(k: int) -> None:
        from rq import Queue

        q = Queue(os.environ["PEER_QUEUE"], connection=redis.Redis.from_url("redis://127.0.0.1:6379/11"))
        apps = sys.modules["bench.peers.apps"]
        for _ in range(k):
            q.enqueue(apps.rq_noop)  # type: ignore[attr-defined]

    return _measure(
        f"rq worker-pool -n {workers} SimpleWorker", n, "redis://127.0.0.1:6379/11", cmd, send, lambda: send(1)
    )


PEERS: dict[str, Callable[[int], PeerResult]] = {
    "celery-redis": lambda n: celery(n, "redis", "threads", 4),
    "celery-redis-prefork": lambda n: celery(n, "redis", "prefork", 2),
    "celery-amqp": lambda n: celery(n, "amqp", "prefork", 2),
    "dramatiq": dramatiq,
    "huey": huey,
    "rq": rq,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--peers", default=",".join(PEERS))
    args = parser.parse_args()
    for name in args.peers.split(","):
        res = PEERS[name](args.tasks)
        print(
            f"{res.name:<40} {res.tasks_per_second:8.0f} tasks/s total  (enqueue {res.enqueue_seconds:.2f}s, "
            f"drain {res.drain_per_second:.0f}/s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
