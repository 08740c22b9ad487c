"""Documents never stay "processing" forever: killed workers, cancels, deletes mid-run, cleanup, two apps.

Each test runs a real app with its local worker processes on SQLite and on
PostgreSQL; a worker is killed with SIGKILL, as the OOM killer would.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conveyor import Conveyor
from conveyor.api.main import create_app
from conveyor.records import Status, TaskRecord
from conveyor.workloads.documents import storage
from conveyor.workloads.documents.tables import chunks_table, documents_table
from tests.conftest import AppFactory
from tests.documents_samples import ENGLISH, ITALIAN, WORDS

#: ~5 MB of varied English: a few seconds of work, so a test can act while it runs
LONG_TEXT = "\n".join(
    f"Line {i}: " + " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(12)) + ". " + ENGLISH[: 40 + i % 200]
    for i in range(20_000)
).encode()


def deadline_loop(seconds: float, what: str) -> Iterator[None]:
    """Yield until ``seconds`` pass, then fail naming ``what``: a poll with a deadline."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        yield
        time.sleep(0.01)
    pytest.fail(f"timed out waiting for {what}")


def wait_for(check: Callable[[], Any], seconds: float, what: str) -> Any:
    for _ in deadline_loop(seconds, what):
        value = check()
        if value:
            return value
    return None


@pytest.fixture
def docs(make_app: AppFactory, sql_database_url: str) -> Iterator[tuple[TestClient, Conveyor]]:
    app = make_app(
        start=False,
        database_url=sql_database_url,
        workloads=["system", "documents"],
        concurrency=1,
        prefetch=1,
        workload_settings={"documents": {"max_upload_mb": 20, "retention_days": 1}},
    )
    with TestClient(create_app(app, scheduler=False)) as client:
        yield client, app


def upload(client: TestClient, name: str, content: bytes) -> dict[str, Any]:
    r = client.post("/api/documents/upload", files={"file": (name, content)})
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def final_status(client: TestClient, document_id: str, seconds: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status: dict[str, Any] = client.get(f"/api/documents/{document_id}/status").json()
        return status if status["status"] != "processing" else None

    result: dict[str, Any] = wait_for(done, seconds, f"document {document_id} to finish")
    return result


def running_worker_pid(app: Conveyor, task_id: str, attempt: int) -> int:
    """The pid of the worker process running ``task_id``'s ``attempt``-th run, once it runs."""

    def find() -> int | None:
        record = app.store.get(task_id)
        if record is None or record.state is not Status.PROCESSING or record.attempts != attempt:
            return None
        for w in app.executor.workers():  # type: ignore[attr-defined]
            if task_id in w["active"]:
                pid: int = w["pid"]
                return pid
        return None

    pid: int = wait_for(find, 60, f"attempt {attempt} of task {task_id} to run")
    return pid


def test_a_worker_killed_mid_run_is_retried_and_the_document_becomes_ready(
    docs: tuple[TestClient, Conveyor],
) -> None:
    client, app = docs
    body = upload(client, "long.txt", LONG_TEXT)
    os.kill(running_worker_pid(app, body["task_id"], 1), signal.SIGKILL)
    status = final_status(client, body["document_id"])
    assert status["status"] == "ready", status
    assert status["total_chunks"] > 100
    record = app.store.get(body["task_id"])
    assert record is not None
    assert record.attempts == 2
    states = [e["status"] for e in client.get(f"/api/v1/tasks/{body['task_id']}/timeline").json()["data"]]
    assert "RETRY" in states


def test_a_worker_killed_past_its_retries_leaves_the_document_failed(docs: tuple[TestClient, Conveyor]) -> None:
    """The task ends FAILURE in the executor, never reaching our code: the document follows it."""
    client, app = docs
    body = upload(client, "long.txt", LONG_TEXT)
    retries = app.registry.get("documents.process").max_retries
    for attempt in range(1, retries + 2):
        os.kill(running_worker_pid(app, body["task_id"], attempt), signal.SIGKILL)
    record = wait_for(
        lambda: (r := app.store.get(body["task_id"])) is not None and r.finished and r, 30, "the task to fail"
    )
    assert isinstance(record, TaskRecord)
    assert record.state is Status.FAILURE
    status = final_status(client, body["document_id"])
    assert (status["status"], status["task_state"], status["ready"]) == ("failed", "FAILURE", False)
    assert "worker process died" in status["message"]
    # Written back, so lists and filters agree with the status route.
    failed = client.get("/api/documents?status=failed").json()
    assert [d["document_id"] for d in failed["data"]] == [body["document_id"]]
    assert "worker process died" in failed["data"][0]["error_message"]


def test_a_task_cancelled_before_it_starts_leaves_the_document_failed(docs: tuple[TestClient, Conveyor]) -> None:
    client, app = docs
    first = upload(client, "long.txt", LONG_TEXT)
    running_worker_pid(app, first["task_id"], 1)  # the one worker is busy from here on
    second = upload(client, "roma.txt", ITALIAN.encode())
    r = client.post(f"/api/v1/tasks/{second['task_id']}/cancel")
    assert r.status_code == 200, r.text
    status = final_status(client, second["document_id"])
    assert (status["status"], status["message"]) == ("failed", "processing was cancelled")
    assert final_status(client, first["document_id"])["status"] == "ready"


def test_deleting_a_document_mid_run_leaves_no_row_chunk_or_file(docs: tuple[TestClient, Conveyor]) -> None:
    client, app = docs
    body = upload(client, "long.txt", LONG_TEXT)
    running_worker_pid(app, body["task_id"], 1)
    folder = storage.tenant_dir(app.settings.data_dir, app.settings.local_tenant) / body["document_id"]
    assert folder.is_dir()
    assert client.delete(f"/api/documents/{body['document_id']}").status_code == 204
    wait_for(lambda: (r := app.store.get(body["task_id"])) is not None and r.finished, 60, "the task to stop")
    assert client.get(f"/api/documents/{body['document_id']}").status_code == 404
    engine: sa.Engine = app.store.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        chunks = conn.execute(
            sa.select(sa.func.count())
            .select_from(chunks_table)
            .where(chunks_table.c.document_id == body["document_id"])
        ).scalar_one()
    assert chunks == 0
    assert not folder.exists()


def test_cleanup_through_a_worker_uses_the_apps_retention(docs: tuple[TestClient, Conveyor]) -> None:
    """The worker process reads the documents settings (retention 1 day here) from its own app's settings."""
    client, app = docs
    old = upload(client, "old.txt", b"old words " * 100)["document_id"]
    recent = upload(client, "recent.txt", b"recent words " * 100)["document_id"]
    for document_id in (old, recent):
        assert final_status(client, document_id)["status"] == "ready"
    engine: sa.Engine = app.store.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(
            documents_table.update()
            .where(documents_table.c.id == old)
            .values(created_at=time.time() - 1.5 * 86400)  # a day and a half ago
        )
    record = app.manager.submit_task("documents.cleanup", {}, tenant="system")
    done = app.manager.wait(record.id, timeout=60)
    assert done.state is Status.SUCCESS, done.error
    assert done.result["deleted"] == 1
    assert client.get(f"/api/documents/{old}").status_code == 404
    assert client.get(f"/api/documents/{recent}").json()["status"] == "ready"


def test_each_app_in_one_process_uses_its_own_database(make_app: AppFactory, tmp_path: Path) -> None:
    """Two apps in one process (tests, embedding): routes use the app serving the request, not the last built."""
    first = make_app(start=False, database_url=f"sqlite:///{tmp_path / 'a.db'}", workloads=["system", "documents"])
    second = make_app(start=False, database_url=f"sqlite:///{tmp_path / 'b.db'}", workloads=["system", "documents"])
    with TestClient(create_app(first, scheduler=False)) as a, TestClient(create_app(second, scheduler=False)) as b:
        in_a = upload(a, "roma.txt", ITALIAN.encode())["document_id"]
        in_b = upload(b, "fox.txt", ENGLISH.encode())["document_id"]
        assert final_status(a, in_a)["status"] == "ready"
        assert final_status(b, in_b)["status"] == "ready"
        assert [d["document_id"] for d in a.get("/api/documents").json()["data"]] == [in_a]
        assert [d["document_id"] for d in b.get("/api/documents").json()["data"]] == [in_b]
        assert b.get(f"/api/documents/{in_a}").status_code == 404
    for app, mine in ((first, in_a), (second, in_b)):
        engine: sa.Engine = app.store.engine  # type: ignore[attr-defined]
        with engine.connect() as conn:
            ids = conn.execute(sa.select(documents_table.c.id)).scalars().all()
        assert ids == [mine]
