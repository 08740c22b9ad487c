"""``scripts/local-cluster``: API, two workers, beat and Flower as separate processes, started and stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from tests.acceptance.server import REPO, free_port
from tests.cli_process import inspect_json, ops_redis_url, wait_until
from tests.conftest import die_with_parent, known_queues

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SCRIPT = REPO / "scripts" / "local-cluster"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """The script's working directory and environment; whatever it left running is killed afterwards."""
    broker = ops_redis_url()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "FLOWER_"))}
    env.update(
        PYTHONPATH=str(REPO),
        PYTHON=sys.executable,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        CONVEYOR_BROKER_URL=broker,
        CONVEYOR_PORT=str(free_port()),
        FLOWER_PORT=str(free_port()),
        WORKER_CONCURRENCY="1",
        STOP_TIMEOUT="30",
    )
    yield tmp_path, env
    for pid_file in (tmp_path / "conveyor-data" / "cluster").glob("*.pid"):
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
    client = redis.Redis.from_url(broker)
    client.flushdb()
    client.close()


def _run(cwd: Path, env: dict[str, str], *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=die_with_parent,
    )


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_local_cluster_starts_runs_a_task_on_a_worker_and_stops_every_process(
    cluster: tuple[Path, dict[str, str]],
) -> None:
    """start → system.ping over HTTP runs on a worker → status → stop leaves no process behind."""
    cwd, env = cluster
    started = _run(cwd, env, "start", "--flower")
    assert started.returncode == 0, started.stdout + started.stderr
    run_dir = cwd / "conveyor-data" / "cluster"
    pids = {p.stem: int(p.read_text()) for p in run_dir.glob("*.pid")}
    assert set(pids) == {"api", "worker1", "worker2", "beat", "flower"}
    family = {name: [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))] for name, pid in pids.items()}
    assert len(family["worker1"]) == 2  # the worker and its one pool process
    assert psutil.Process(pids["beat"]).cmdline()[5] == "beat"  # celery's beat itself, exec'd

    status = _run(cwd, env, "status")
    assert status.returncode == 0, status.stdout
    assert "api: running" in status.stdout

    api = f"http://127.0.0.1:{env['CONVEYOR_PORT']}"
    submitted = httpx.post(f"{api}/api/v1/tasks", json={"task_type": "system.ping"}, timeout=10)
    assert submitted.status_code == 202
    task_id = submitted.json()["task_id"]

    def finished() -> dict[str, object] | None:
        body: dict[str, object] = httpx.get(f"{api}/api/v1/tasks/{task_id}", timeout=10).json()
        return body if body["status"] in ("SUCCESS", "FAILURE") else None

    done = wait_until(finished, 60, "the ping to finish", interval=0.2)
    assert done["status"] == "SUCCESS"
    ran_in = done["result"]["pid"]  # type: ignore[index]
    assert ran_in in family["worker1"][1:] + family["worker2"][1:]  # a worker's pool, not the API

    code, report = inspect_json([], env, cwd=cwd)
    assert code == 0
    workers = {w["name"].split("@")[0]: w for w in report["workers"]}
    assert set(workers) == {"worker1", "worker2"}
    # No -Q: every queue the app knows, the standard lanes and those of its (default) workloads' types.
    # Asked of a fresh process, as the workers are: this one's registry holds the test suite's own types too.
    known = known_queues(cwd=cwd, env=env)  # a worker without -Q consumes every declared queue
    for worker in workers.values():
        assert worker["queues"] == known
    assert sum(report["queues"].values()) == 0
    code, beat = inspect_json(["beat"], env, cwd=cwd)
    assert code == 0
    assert beat["beat"]["pid"] == pids["beat"]

    flower = httpx.get(f"http://127.0.0.1:{env['FLOWER_PORT']}/healthcheck", timeout=10)
    assert flower.status_code == 200

    stopped = _run(cwd, env, "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    left = [pid for members in family.values() for pid in members if not _gone(pid)]
    assert left == []
    assert list(run_dir.glob("*.pid")) == []
    assert "Warm shutdown" in (run_dir / "worker1.log").read_text()
    after = _run(cwd, env, "status")
    assert after.returncode == 3
    assert "api: stopped" in after.stdout
