"""`conveyor serve` as a user runs it: curl, the CLI, SIGKILL and SIGTERM, a thousand clients."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.server import REPO, Server

pytestmark = pytest.mark.slow


def all_done(url: str, ids: list[str], timeout: float = 60, headers: dict[str, str] | None = None) -> list[Any]:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        while True:
            records = [client.get(f"/api/v1/tasks/{i}").json() for i in ids]
            if all(r["status"] in ("SUCCESS", "FAILURE", "CANCELLED") for r in records):
                return records
            assert time.monotonic() < deadline, [r["status"] for r in records]
            time.sleep(0.2)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_flow_with_curl_in_an_empty_folder(tmp_path: Path) -> None:
    """Submit system.sleep with curl, follow /events, read the result; data stays in that folder."""
    with Server(tmp_path) as server:
        created = json.loads(
            subprocess.check_output(
                [
                    "curl",
                    "-s",
                    "-X",
                    "POST",
                    f"{server.url}/api/v1/tasks",
                    "-H",
                    "Content-Type: application/json",
                    "-d",
                    '{"task_type": "system.sleep", "params": {"seconds": 1, "steps": 4}}',
                ]
            )
        )
        assert created["status"] == "PENDING"
        stream = subprocess.check_output(
            ["curl", "-sN", "--max-time", "30", f"{server.url}/api/v1/tasks/{created['task_id']}/events"], text=True
        )
        assert "event: end" in stream
        assert '"progress": 50.0' in stream
        result = json.loads(
            subprocess.check_output(["curl", "-s", f"{server.url}/api/v1/tasks/{created['task_id']}/result/"])
        )
        assert result["status"] == "SUCCESS"
        assert result["result"]["steps"] == 4
    assert (tmp_path / "conveyor-data" / "conveyor.db").exists()


def test_a_killed_server_loses_no_task_and_runs_each_to_completion_once(tmp_path: Path) -> None:
    """SIGKILL with 2 tasks running and 50 queued; after a restart all 52 end SUCCESS exactly once."""
    server = Server(tmp_path).start()
    with httpx.Client(base_url=server.url) as client:
        ids = [
            client.post(
                "/api/v1/tasks",
                json={"task_type": "system.sleep", "params": {"seconds": 3 if i < 2 else 0.05, "steps": 3}},
            ).json()["task_id"]
            for i in range(52)
        ]
        deadline = time.monotonic() + 20
        while sum(client.get(f"/api/v1/tasks/{i}").json()["status"] == "PROCESSING" for i in ids[:2]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    server.kill(signal.SIGKILL)
    restarted = Server(tmp_path, port=server.port).start()
    try:
        records = all_done(restarted.url, ids)
        assert [r["status"] for r in records] == ["SUCCESS"] * 52
        assert [r["attempts"] for r in records[:2]] == [2, 2]  # interrupted, then run again
        with httpx.Client(base_url=restarted.url) as client:
            for task_id in ids:
                timeline = client.get(f"/api/v1/tasks/{task_id}/timeline").json()["data"]
                assert [e["status"] for e in timeline if e["kind"] == "state"].count("SUCCESS") == 1
    finally:
        restarted.stop()


def test_sigterm_lets_running_tasks_finish(tmp_path: Path) -> None:
    server = Server(tmp_path).start()
    with httpx.Client(base_url=server.url) as client:
        task_id = client.post(
            "/api/v1/tasks", json={"task_type": "system.sleep", "params": {"seconds": 1.5, "steps": 3}}
        ).json()["task_id"]
        while client.get(f"/api/v1/tasks/{task_id}").json()["status"] != "PROCESSING":
            time.sleep(0.05)
    # uvicorn drains, then re-raises the signal it caught: the exit status is -SIGTERM.
    assert server.kill(signal.SIGTERM) in (0, -signal.SIGTERM)
    with Server(tmp_path) as again, httpx.Client(base_url=again.url) as client:
        record = client.get(f"/api/v1/tasks/{task_id}").json()
    assert record["status"] == "SUCCESS"
    assert record["attempts"] == 1


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    run = subprocess.run(
        [sys.executable, "-m", "conveyor", "serve", "--host", "0.0.0.0", "--port", "1"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "CONVEYOR_API_KEYS" in run.stderr


def conveyor_cli(*args: str, url: str, cwd: Path, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "CONVEYOR_URL": url, "COLUMNS": "200"}
    if key:
        env["CONVEYOR_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_cli_submits_waits_with_a_progress_bar_and_lists(tmp_path: Path) -> None:
    with Server(tmp_path, env={"CONVEYOR_API_KEYS": "k1=team"}) as server:
        run = conveyor_cli(
            "submit",
            "system.sleep",
            "-p",
            "seconds=0.6",
            "-p",
            "steps=3",
            "--wait",
            url=server.url,
            cwd=tmp_path,
            key="k1",
        )
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["steps"] == 3
        assert "SUCCESS" in run.stderr
        assert "100.0%" in run.stderr
        failed = conveyor_cli(
            "submit",
            "system.sleep",
            "--json",
            '{"seconds": 0, "steps": 1, "fail": true}',
            "--wait",
            url=server.url,
            cwd=tmp_path,
            key="k1",
        )
        assert failed.returncode == 1
        assert "failed on purpose" in failed.stderr
        task_id = conveyor_cli(
            "submit", "system.sleep", "-p", "seconds=30", url=server.url, cwd=tmp_path, key="k1"
        ).stdout.strip()
        status = conveyor_cli("status", task_id, url=server.url, cwd=tmp_path, key="k1")
        assert json.loads(status.stdout)["task_id"] == task_id
        cancel = conveyor_cli("cancel", task_id, url=server.url, cwd=tmp_path, key="k1")
        assert cancel.returncode == 0
        listing = conveyor_cli("tasks", "--status", "SUCCESS", url=server.url, cwd=tmp_path, key="k1")
        assert "system.sleep" in listing.stdout
        bad = conveyor_cli("submit", "system.sleep", "-p", "seconds=-3", url=server.url, cwd=tmp_path, key="k1")
        assert bad.returncode == 1
        assert "seconds" in bad.stderr
        denied = conveyor_cli("tasks", url=server.url, cwd=tmp_path, key="wrong")
        assert denied.returncode == 1
        assert "401" in denied.stderr


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    run = subprocess.run(
        [sys.executable, "-m", "conveyor", "db", "upgrade", "--database-url", url],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    import sqlite3

    tables = {r[0] for r in sqlite3.connect(tmp_path / "fresh.db").execute("SELECT name FROM sqlite_master")}
    assert {"conveyor_tasks", "conveyor_task_events"} <= tables


def test_a_thousand_concurrent_submits_all_succeed_once(tmp_path: Path) -> None:
    """1,000 clients at once through HTTP: every task ends SUCCESS at 100 %, each run once."""

    async def submit_all(url: str) -> list[str]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

            async def one(i: int) -> str:
                r = await client.post("/api/v1/tasks", json={"task_type": "system.ping", "params": {"payload": str(i)}})
                assert r.status_code == 202, r.text
                task_id: str = r.json()["task_id"]
                return task_id

            return list(await asyncio.gather(*(one(i) for i in range(1000))))

    with Server(tmp_path) as server:
        ids = asyncio.run(submit_all(server.url))
        assert len(set(ids)) == 1000
        with httpx.Client(base_url=server.url, timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                page = client.get("/api/v1/tasks", params={"status": "SUCCESS", "limit": 1}).json()
                if page["count"] == 1000:
                    break
                assert time.monotonic() < deadline
                time.sleep(0.2)
            records: list[dict[str, Any]] = []
            for offset in range(0, 1000, 500):
                records += client.get("/api/v1/tasks", params={"limit": 500, "offset": offset}).json()["data"]
    assert sorted(r["task_id"] for r in records) == sorted(ids)
    assert all(r["status"] == "SUCCESS" and r["progress"] == 100 and r["attempts"] == 1 for r in records)
