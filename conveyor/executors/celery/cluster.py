"""The Celery side of a deployment, for ``conveyor worker|beat|flower|inspect``.

The process commands become Celery's own programs for our app
(``python -m celery -A conveyor.worker …``) by ``exec``: the process that a
supervisor, a container runtime or a test started *is* the Celery worker, so
SIGTERM reaches it directly and means Celery's warm shutdown.

The inspect reports are plain data — what the workers say over the broker's
control channel, what the broker says about its queues, what beat's heartbeat
says — printed as JSON or, by ``print_report``, as tables.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from conveyor.executors.celery import CeleryExecutor

__all__ = [
    "CELERY_APP",
    "HEARTBEAT_FILE",
    "active_report",
    "beat_argv",
    "beat_report",
    "celery_argv",
    "exec_argv",
    "flower_argv",
    "heartbeat_path",
    "print_report",
    "queues_report",
    "read_heartbeat",
    "worker_argv",
    "workers_report",
]

#: the module Celery loads (``-A``): it builds a Conveyor from CONVEYOR_* env
CELERY_APP = "conveyor.worker"
#: what ``conveyor beat`` writes under the data dir on every tick
HEARTBEAT_FILE = "beat-heartbeat.json"


def celery_argv(subcommand: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", CELERY_APP, subcommand, *args]


def worker_argv(
    *,
    queues: Sequence[str] = (),
    concurrency: int | None = None,
    pool: str = "prefork",
    name: str | None = None,
    loglevel: str = "INFO",
    extra: Sequence[str] = (),
) -> list[str]:
    """``celery worker`` for our app. No queues: every queue the app knows (its ``task_queues``)."""
    args = ["-P", pool, "-l", loglevel.upper()]
    if queues:
        args += ["-Q", ",".join(queues)]
    if concurrency is not None:
        args += ["-c", str(concurrency)]
    # Celery's default name (celery@host) collides when two workers share a
    # host; the pid survives exec, so it tells them apart.
    args += ["-n", name or f"conveyor-{os.getpid()}@%h"]
    return celery_argv("worker", *args, *extra)


def beat_argv(*, loglevel: str = "INFO", max_interval: float | None = None, extra: Sequence[str] = ()) -> list[str]:
    args = ["-S", "conveyor.executors.celery.beat:ConveyorScheduler", "-l", loglevel.upper()]
    if max_interval is not None:
        args += ["--max-interval", f"{max_interval:g}"]
    return celery_argv("beat", *args, *extra)


def flower_argv(*, port: int, address: str, extra: Sequence[str] = ()) -> list[str]:
    return celery_argv("flower", f"--port={port}", f"--address={address}", *extra)


def exec_argv(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Replace this process with ``argv`` (never returns)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env if env is not None else dict(os.environ))


# -- inspect -------------------------------------------------------------------


def workers_report(executor: CeleryExecutor, timeout: float = 1.0) -> list[dict[str, Any]]:
    """Every worker that answers a ping within ``timeout``, with what it runs and consumes.

    One broadcast waits the whole timeout (nobody knows how many workers
    there are); the follow-up questions name the workers that answered and
    return as soon as each has.
    """
    control = executor.app.control
    ping = control.inspect(timeout=timeout).ping() or {}
    names = sorted(ping)
    if not names:
        return []
    ask = control.inspect(destination=names, limit=len(names), timeout=max(timeout, 2.0))
    active = ask.active() or {}
    reserved = ask.reserved() or {}
    registered = ask.registered() or {}
    stats = ask.stats() or {}
    queues = ask.active_queues() or {}
    report = []
    for name in names:
        st = stats.get(name) or {}
        pool = st.get("pool") or {}
        report.append(
            {
                "name": name,
                "alive": True,
                "pid": st.get("pid"),
                "concurrency": pool.get("max-concurrency"),
                "queues": sorted(q.get("name", "") for q in queues.get(name) or []),
                "active": len(active.get(name) or []),
                "reserved": len(reserved.get(name) or []),
                "processed": sum((st.get("total") or {}).values()),
                "registered": sorted(_task_name(t) for t in registered.get(name) or []),
            }
        )
    return report


def _task_name(entry: str) -> str:
    # ``registered`` lists "name [rate_limit=…]" when a type has options set
    return entry.split(" ", 1)[0]


def active_report(executor: CeleryExecutor, timeout: float = 1.0) -> list[dict[str, Any]]:
    """The tasks the workers are running now, oldest first."""
    active = executor.app.control.inspect(timeout=timeout).active() or {}
    rows = []
    for worker, tasks in sorted(active.items()):
        for t in tasks or []:
            info = t.get("delivery_info") or {}
            args = t.get("args") or []
            rows.append(
                {
                    "task_id": t.get("id") or (args[0] if args else None),
                    "type": t.get("name") or t.get("type"),
                    "worker": worker,
                    "queue": info.get("routing_key"),
                    "worker_pid": t.get("worker_pid"),
                    "started_at": t.get("time_start"),  # epoch seconds on the worker's clock
                }
            )
    rows.sort(key=lambda r: r["started_at"] or 0.0)
    return rows


def queues_report(executor: CeleryExecutor) -> dict[str, int]:
    """Messages waiting per queue, from the broker itself."""
    return executor.broker_depths()


def beat_report(data_dir: Path, *, max_age: float) -> dict[str, Any]:
    """The last heartbeat of ``conveyor beat`` under ``data_dir``: alive when younger than ``max_age``."""
    beat = read_heartbeat(data_dir)
    if beat is None:
        return {"alive": False, "reason": f"no heartbeat at {heartbeat_path(data_dir)}", "jobs": {}}
    age = time.time() - float(beat.get("at", 0))
    alive = age <= max_age
    report = {**beat, "age": round(age, 3), "alive": alive}
    if not alive:
        report["reason"] = f"the last heartbeat is {age:.0f}s old (more than {max_age:g}s)"
    return report


def heartbeat_path(data_dir: Path) -> Path:
    return data_dir / HEARTBEAT_FILE


def read_heartbeat(data_dir: Path) -> dict[str, Any] | None:
    """The last heartbeat a beat wrote under ``data_dir``, or None."""
    try:
        loaded: dict[str, Any] = json.loads(heartbeat_path(data_dir).read_text())
    except (OSError, ValueError):
        return None
    return loaded


def print_report(report: dict[str, Any], console: Console) -> None:
    """``conveyor inspect`` as rich tables."""
    if "broker" in report:
        console.print(f"broker: {report['broker']}")
    if "workers" in report:
        table = Table(title=f"{len(report['workers'])} worker(s)")
        for column in ("name", "pid", "pool", "queues", "active", "reserved", "processed", "registered"):
            table.add_column(column)
        for w in report["workers"]:
            table.add_row(
                w["name"],
                str(w["pid"]),
                str(w["concurrency"]),
                ", ".join(w["queues"]),
                str(w["active"]),
                str(w["reserved"]),
                str(w["processed"]),
                f"{len(w['registered'])} types",
            )
        console.print(table)
    if "active" in report:
        table = Table(title=f"{len(report['active'])} running task(s)")
        table.add_column("task", overflow="fold")
        for column in ("type", "queue", "worker", "running for"):
            table.add_column(column)
        for t in report["active"]:
            age = f"{time.time() - t['started_at']:.1f}s" if t["started_at"] else "?"
            table.add_row(str(t["task_id"]), str(t["type"]), str(t["queue"]), t["worker"], age)
        console.print(table)
    if "queues" in report:
        table = Table(title="messages waiting on the broker")
        table.add_column("queue")
        table.add_column("depth", justify="right")
        for name, depth in report["queues"].items():
            table.add_row(name, str(depth))
        console.print(table)
    if "beat" in report:
        beat = report["beat"]
        state = "[green]alive[/green]" if beat["alive"] else f"[red]dead[/red]: {beat['reason']}"
        console.print(f"beat: {state}" + (f" (pid {beat['pid']} on {beat['host']})" if "pid" in beat else ""))
        table = Table(title="periodic jobs")
        for column in ("job", "task type", "schedule", "next slot (UTC)", "last task"):
            table.add_column(column)
        for name, job in beat["jobs"].items():
            nxt = datetime.fromtimestamp(job["next"], tz=UTC).isoformat(timespec="seconds") if "next" in job else ""
            table.add_row(name, job.get("task_type", ""), job.get("schedule", ""), nxt, job.get("task_id", ""))
        console.print(table)
