"""The many-task stream (/api/v1/events) costs its own tasks' changes, not every change in the process."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest

from conveyor import Conveyor
from conveyor.api.main import create_app
from conveyor.records import TaskRecord
from tests.conftest import AppFactory
from tests.live_server import live_server

ALPHA = {"Authorization": "Bearer ka"}
SLEEP = {"task_type": "system.sleep", "params": {"seconds": 0.2, "steps": 4}}


@pytest.fixture
def served(make_app: AppFactory) -> Iterator[tuple[str, Conveyor]]:
    app = make_app(
        start=False, database_url="memory://", api_keys="ka=alpha,kb=beta", tenant_rate=0, workloads=["system"]
    )
    with live_server(create_app(app, scheduler=False)) as url:
        yield url, app


def _submit(url: str, n: int, body: dict[str, Any] = SLEEP) -> list[str]:
    with httpx.Client(base_url=url, headers=ALPHA, timeout=10) as c:
        return [c.post("/api/v1/tasks", json=body).json()["task_id"] for _ in range(n)]


def _wait_finished(app: Conveyor, ids: list[str]) -> None:
    deadline = time.monotonic() + 60
    while not all(r.finished for r in app.store.get_many(ids)) or len(app.store.get_many(ids)) < len(ids):
        assert time.monotonic() < deadline
        time.sleep(0.05)


class StreamReader(threading.Thread):
    """Reads one /api/v1/events stream into ``events`` until ``stop()`` shuts its socket."""

    def __init__(self, url: str, ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.ids = ids
        self.events: list[dict[str, Any]] = []
        self.conn = http.client.HTTPConnection(httpx.URL(url).host, httpx.URL(url).port, timeout=60)

    def run(self) -> None:
        query = urllib.parse.urlencode({"ids": ",".join(self.ids)})
        try:
            self.conn.request("GET", f"/api/v1/events?{query}", headers=ALPHA)
            response = self.conn.getresponse()
            while line := response.readline():
                if line.startswith(b"data:"):
                    self.events.append(json.loads(line[5:]))
        except (OSError, http.client.HTTPException, ValueError):
            return  # shut by stop()

    def stop(self) -> None:
        if self.conn.sock is not None:
            with contextlib.suppress(OSError):
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.join(5)
        self.conn.close()

    def wait_for(self, check: Any, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check(self.events):
            assert time.monotonic() < deadline, self.events[-5:]
            time.sleep(0.05)


def test_a_stream_re_reads_only_its_own_tasks_when_they_change(
    served: tuple[str, Conveyor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changes of other tasks wake no read of the watched ones (each flush of any task once re-read all 200)."""
    url, app = served
    watched = _submit(url, 20, {"task_type": "system.sleep", "params": {"seconds": 0, "steps": 1}})
    _wait_finished(app, watched)
    reads: list[int] = []
    get_many = app.store.get_many

    def counted(ids: Sequence[str]) -> list[TaskRecord]:
        reads.append(len(set(ids) & set(watched)))
        return get_many(ids)

    monkeypatch.setattr(app.store, "get_many", counted)
    reader = StreamReader(url, watched)
    reader.start()
    reader.wait_for(lambda events: len({e["task_id"] for e in events}) == 20)
    at_open = sum(reads)
    others = _submit(url, 10)
    _wait_finished(app, others)
    reader.stop()
    assert at_open == 20  # one read of each watched task when the stream opens
    assert sum(reads) == at_open  # the 10 other tasks' ~60 changes read none of them again
    assert len(reader.events) == 20


def test_a_stream_carries_every_step_of_a_watched_task_to_its_end(served: tuple[str, Conveyor]) -> None:
    url, _app = served
    running = _submit(url, 1, {"task_type": "system.sleep", "params": {"seconds": 1.0, "steps": 4}, "delay": 1.0})
    reader = StreamReader(url, [*running, "not-a-task"])
    reader.start()
    reader.wait_for(lambda events: any(e["status"] == "SUCCESS" for e in events))
    reader.stop()
    statuses = [e["status"] for e in reader.events]
    assert statuses[-1] == "SUCCESS"
    assert "PROCESSING" in statuses
    progress = [e["progress"] for e in reader.events if e["status"] == "PROCESSING"]
    assert progress == sorted(progress)
    assert len(progress) >= 2
