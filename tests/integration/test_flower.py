"""``conveyor flower``: Celery's monitor on our app, watching a real worker on Redis (database 9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor import Status
from tests.acceptance.server import free_port
from tests.cli_process import CliProcess, ops_env, wait_until
from tests.conftest import AppFactory

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _flower(env: dict[str, str], log: Path, *args: str) -> tuple[CliProcess, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthcheck", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    return CliProcess(["flower", "--port", str(port), *args], env, log).start(ready=up), url


def _get(url: str) -> Any:
    answer = httpx.get(url, timeout=10)
    answer.raise_for_status()
    return answer.json()


def test_flower_shows_our_worker_with_our_task_types_and_our_task(
    broker: str, tmp_path: Path, make_app: AppFactory, processes: list[CliProcess]
) -> None:
    """Flower's /api/workers lists the worker with Conveyor's task types; /api/tasks has the task we submitted."""
    db = f"sqlite:///{tmp_path / 'conveyor.db'}"
    app = make_app(executor="celery", broker_url=broker, database_url=db, run_executor=False)
    env = ops_env(broker, db, tmp_path / "data")
    worker = CliProcess(
        ["worker", "-Q", "default", "-c", "1", "-n", "flowered@%h", "--without-mingle"], env, tmp_path / "worker.log"
    ).start(ready=b" ready.")
    processes.append(worker)
    flower, url = _flower(env, tmp_path / "flower.log", "--unauthenticated-api")
    processes.append(flower)

    def our_worker() -> dict[str, Any] | None:
        workers = _get(f"{url}/api/workers?refresh=1")
        return next((info for name, info in workers.items() if name.startswith("flowered@")), None)

    info = wait_until(our_worker, 30, "Flower to see the worker", interval=0.5)
    assert {"system.ping", "system.sleep", "maintenance.purge_expired"} <= set(info["registered"])
    assert [q["name"] for q in info["active_queues"]] == ["default"]

    def heard_from_worker() -> bool:
        # Flower's live view is fed by the workers' events, which Flower itself switches
        # on once it runs: a task that ran before then would never reach it.
        seen = _get(f"{url}/workers?json=1")["data"]
        listening = any(w["hostname"].startswith("flowered@") and w["status"] for w in seen)
        return listening and b"Events of group {task} enabled by remote" in worker.log.read_bytes()

    wait_until(heard_from_worker, 30, "Flower to switch on and receive the worker's events", interval=0.5)
    task_id = app.manager.submit("system.ping", payload="seen by flower")
    assert app.manager.wait(task_id, timeout=30).state is Status.SUCCESS

    def our_task() -> dict[str, Any] | None:
        task: dict[str, Any] | None = _get(f"{url}/api/tasks").get(task_id)
        return task if task and task.get("state") == "SUCCESS" else None

    task = wait_until(our_task, 30, "Flower to record the task", interval=0.5)
    assert task["name"] == "system.ping"
    assert task["worker"].startswith("flowered@")
    assert task_id in task["args"]  # the message carries the task id, nothing else


def test_flower_api_needs_authentication_unless_asked(broker: str, tmp_path: Path, processes: list[CliProcess]) -> None:
    """Without --unauthenticated-api, Flower's API answers 401: the flag is what opens it."""
    env = ops_env(broker, f"sqlite:///{tmp_path / 'conveyor.db'}", tmp_path / "data")
    flower, url = _flower(env, tmp_path / "flower.log")
    processes.append(flower)
    assert httpx.get(f"{url}/api/workers", timeout=10).status_code == 401
