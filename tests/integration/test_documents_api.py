"""Seed 001's documents API over HTTP: upload, status, details, chunks, search, delete, and every refusal."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conveyor import Conveyor
from conveyor.api.main import create_app
from conveyor.errors import ConfigurationError
from tests.conftest import AppFactory
from tests.documents_samples import HTML, ITALIAN, make_docx, make_encrypted_pdf, make_pdf

ALPHA = {"Authorization": "Bearer ka"}
SEED_STEPS = ["Reading file", "Running encoder", "Saving metadata", "Complete"]
STATUS_KEYS = {"document_id", "status", "progress", "task_state", "message", "total_chunks", "ready"}
BETA = {"Authorization": "Bearer kb"}


@pytest.fixture
def docs(make_app: AppFactory, sql_database_url: str) -> Iterator[tuple[TestClient, Conveyor]]:
    app = make_app(
        start=False,
        database_url=sql_database_url,
        api_keys="ka=alpha,kb=beta",
        workloads=["system", "documents"],
        workload_settings={"documents": {"max_upload_mb": 1, "quota_mb": 3}},
    )
    with TestClient(create_app(app, scheduler=False)) as client:
        yield client, app


def upload(client: TestClient, name: str, content: bytes, headers: dict[str, str] = ALPHA) -> Any:
    return client.post(
        "/api/documents/upload", files={"file": (name, content, "application/octet-stream")}, headers=headers
    )


def poll(client: TestClient, document_id: str, headers: dict[str, str] = ALPHA, timeout: float = 60) -> dict[str, Any]:
    """Poll /status as seed 001's front end does, until ready or failed."""
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = client.get(f"/api/documents/{document_id}/status", headers=headers).json()
        if status["status"] != "processing":
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.parametrize("kind", ["pdf", "italian", "docx", "html"])
def test_an_upload_becomes_ready_with_chunks_tokens_language_and_metadata(
    docs: tuple[TestClient, Conveyor], tmp_path: Path, kind: str
) -> None:
    client, _app = docs
    if kind == "pdf":
        content, name = make_pdf(tmp_path / "b.pdf", 20).read_bytes(), "book.pdf"
    elif kind == "italian":
        content, name = ITALIAN.encode(), "roma.txt"
    elif kind == "docx":
        content, name = make_docx(tmp_path / "r.docx").read_bytes(), "report.docx"
    else:
        content, name = HTML.encode(), "guide.html"
    r = upload(client, name, content)
    assert r.status_code == 202
    body = r.json()
    assert (body["success"], body["status"]) == (True, "processing")
    assert set(client.get(f"/api/documents/{body['document_id']}/status", headers=ALPHA).json()) == STATUS_KEYS
    status = poll(client, body["document_id"])
    assert set(status) == STATUS_KEYS
    task = client.get(f"/api/v1/tasks/{body['task_id']}", headers=ALPHA).json()
    assert status["status"] == "ready", (status, task.get("error"))
    assert status["ready"] is True
    assert status["task_state"] == "SUCCESS"
    assert status["progress"] == 100
    assert status["total_chunks"] >= 1
    details = client.get(f"/api/documents/{body['document_id']}", headers=ALPHA).json()
    assert details["tokens"] > 0
    assert details["language"] == ("it" if kind == "italian" else "en")
    assert details["filename"] == name
    meta = json.loads(Path(details["metadata_file"]).read_text())
    assert meta["total_chunks"] == status["total_chunks"]
    assert Path(details["metadata_file"]).name.endswith("_sections_metadata.json")
    assert Path(details["index_file"]).exists()
    chunks = client.get(f"/api/documents/{body['document_id']}/chunks?limit=2", headers=ALPHA).json()
    assert chunks["count"] == status["total_chunks"]
    assert chunks["data"][0]["index"] == 0
    # Progress is rate-limited on its way to the store, so a fast document may skip
    # steps here (test_task.py checks every step); what shows is in the seed's order.
    # The document row turns ready just before the task's own outcome is
    # written: follow the task's event stream to its end, then read its timeline.
    with client.stream("GET", f"/api/v1/tasks/{body['task_id']}/events", headers=ALPHA) as stream:
        for _ in stream.iter_lines():
            pass
    timeline = client.get(f"/api/v1/tasks/{body['task_id']}/timeline", headers=ALPHA).json()["data"]
    assert timeline[0]["message"] == "Started"
    assert timeline[-1]["message"] == "Completed"
    steps = timeline[1:-1]
    assert {e["message"] for e in steps} <= set(SEED_STEPS)
    assert [SEED_STEPS.index(e["message"]) for e in steps] == sorted(SEED_STEPS.index(e["message"]) for e in steps)
    assert [e["progress"] for e in steps] == sorted(e["progress"] for e in steps)


def test_documents_are_listed_searched_and_deleted(docs: tuple[TestClient, Conveyor]) -> None:
    client, _app = docs
    roma = upload(client, "roma.txt", ITALIAN.encode()).json()["document_id"]
    other = upload(client, "fox.txt", b"The quick brown fox jumps over the lazy dog. " * 50).json()["document_id"]
    poll(client, roma)
    poll(client, other)
    listing = client.get("/api/documents?limit=1", headers=ALPHA).json()
    assert listing["count"] == 2
    assert listing["data"][0]["document_id"] == other
    second = client.get("/api/documents?limit=1&offset=1", headers=ALPHA).json()
    assert [d["document_id"] for d in second["data"]] == [roma]
    assert client.get("/api/documents?status=failed", headers=ALPHA).json()["count"] == 0
    assert client.get("/api/documents?status=ready", headers=ALPHA).json()["count"] == 2
    hits = client.get("/api/documents/search?q=storia+di+Roma", headers=ALPHA).json()
    assert hits["data"][0]["document_id"] == roma
    assert hits["data"][0]["filename"] == "roma.txt"
    assert all(h["document_id"] == roma for h in hits["data"])  # BM25: the fox text has none of the words
    pages = client.get(f"/api/documents/{roma}/chunks?limit=2&offset=1", headers=ALPHA).json()
    assert [c["index"] for c in pages["data"]] == [1, 2]
    assert pages["data"][0]["char_start"] < pages["data"][0]["char_end"]
    assert pages["data"][0]["language"] == "it"
    one = client.get(f"/api/documents/{other}/search?q=lazy+dog", headers=ALPHA).json()
    assert one["count"] == 1
    stored = Path(client.get(f"/api/documents/{roma}", headers=ALPHA).json()["metadata_file"]).parent
    assert client.delete(f"/api/documents/{roma}", headers=ALPHA).status_code == 204
    assert not stored.exists()
    assert client.get(f"/api/documents/{roma}", headers=ALPHA).status_code == 404
    assert client.get("/api/documents", headers=ALPHA).json()["count"] == 1


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("empty.pdf", lambda d: b"%PDF-1.4\n", "could not be read"),
        ("corrupt.pdf", lambda d: make_pdf(d / "c.pdf", 3).read_bytes()[:700], "could not be read"),
        ("locked.pdf", lambda d: make_encrypted_pdf(d / "l.pdf").read_bytes(), "encrypted"),
        ("blank.txt", lambda d: b"    \n\n   ", "no text"),
    ],
    ids=["header-only-pdf", "truncated-pdf", "encrypted-pdf", "whitespace"],
)
def test_unreadable_documents_end_failed_with_the_cause(
    docs: tuple[TestClient, Conveyor], tmp_path: Path, name: str, make: Any, message: str
) -> None:
    client, _ = docs
    r = upload(client, name, make(tmp_path))
    assert r.status_code == 202
    status = poll(client, r.json()["document_id"])
    assert status["status"] == "failed"
    assert status["task_state"] == "FAILURE"
    assert message in status["message"]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.txt", b""),
        ("book.pdf", b""),
        ("notes.txt", bytes(range(256)) * 20),
        ("notes.txt", b"\x7fELF\x02\x01\x01" + bytes(4000)),
        ("photo.txt", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8),
        ("archive.docx", b"PK\x03\x04" + bytes(300)),
    ],
    ids=["zero-bytes", "zero-byte-pdf", "binary-renamed-txt", "elf-renamed-txt", "png-renamed-txt", "broken-docx"],
)
def test_unsupported_content_is_415_and_leaves_nothing(
    docs: tuple[TestClient, Conveyor], name: str, content: bytes
) -> None:
    """The type is read from the content, whatever the name says; nothing stays on disk or in the table."""
    client, app = docs
    r = upload(client, name, content)
    assert r.status_code == 415
    assert r.json()["error"]["code"] == "unsupported_media_type"
    assert files_under(app.settings.data_dir / "documents") == []
    assert client.get("/api/documents", headers=ALPHA).json()["count"] == 0


def test_an_upload_over_the_limit_is_413_with_nothing_left_on_disk(docs: tuple[TestClient, Conveyor]) -> None:
    client, app = docs
    big = b"word " * (300 * 1024)  # 1.5 MiB against a 1 MiB limit
    r = upload(client, "big.txt", big)
    assert r.status_code == 413
    assert r.json()["error"]["details"]["limit"] == "upload limit"
    assert files_under(app.settings.data_dir / "documents") == []

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        boundary = b"XyZ"
        yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="s.txt"\r\n\r\n'
        for _ in range(40):
            yield b"x" * 32 * 1024
        yield b"\r\n--" + boundary + b"--\r\n"

    r = client.post(
        "/api/documents/upload",
        content=chunked(),
        headers={**ALPHA, "Content-Type": "multipart/form-data; boundary=XyZ"},
    )
    assert r.status_code == 413
    assert files_under(app.settings.data_dir / "documents") == []


def test_the_tenant_quota_is_413(docs: tuple[TestClient, Conveyor]) -> None:
    client, _ = docs
    part = b"quota words here " * 50_000  # ~0.8 MiB each, 3 MiB quota
    codes = [upload(client, f"q{i}.txt", part, BETA).status_code for i in range(5)]
    assert codes[:3] == [202, 202, 202]
    assert 413 in codes[3:]
    assert upload(client, "small.txt", b"still fine for alpha " * 10).status_code == 202


@pytest.mark.parametrize("name", ["../../etc/passwd", "..\\..\\windows\\win.ini", "evil\x00name.txt", "/abs/x.txt"])
def test_hostile_file_names_are_kept_as_metadata_only(docs: tuple[TestClient, Conveyor], name: str) -> None:
    client, app = docs
    r = upload(client, name, b"plain text content for a name test " * 20)
    assert r.status_code == 202, r.text
    details = client.get(f"/api/documents/{r.json()['document_id']}", headers=ALPHA).json()
    assert "/" not in details["filename"]
    assert "\\" not in details["filename"]
    assert "\x00" not in details["filename"]
    stored = [p for p in files_under(app.settings.data_dir / "documents") if p.suffix == ".txt"]
    assert stored
    root = (app.settings.data_dir / "documents").resolve()
    assert all(p.resolve().is_relative_to(root) for p in stored)
    assert all(p.name.startswith(r.json()["document_id"]) for p in stored)


def test_another_tenants_document_is_404_and_no_key_is_401(docs: tuple[TestClient, Conveyor]) -> None:
    client, _ = docs
    document_id = upload(client, "mine.txt", b"alpha's own words " * 30).json()["document_id"]
    for path in ("", "/status", "/chunks", "/search?q=words"):
        assert client.get(f"/api/documents/{document_id}{path}", headers=BETA).status_code == 404, path
    assert client.delete(f"/api/documents/{document_id}", headers=BETA).status_code == 404
    assert client.get("/api/documents", headers=BETA).json()["count"] == 0
    assert client.get(f"/api/documents/{document_id}/status").status_code == 401
    assert upload(client, "x.txt", b"hello", headers={}).status_code == 401


def test_a_form_without_a_file_field_is_400(docs: tuple[TestClient, Conveyor]) -> None:
    client, _ = docs
    r = client.post("/api/documents/upload", data={"other": "x"}, files={"notfile": ("a.txt", b"abc")}, headers=ALPHA)
    assert r.status_code == 400
    assert "'file'" in r.json()["error"]["message"]
    r = client.post("/api/documents/upload", json={"file": "abc"}, headers=ALPHA)
    assert r.status_code == 415


def test_chunk_size_and_overlap_can_be_chosen_at_upload(docs: tuple[TestClient, Conveyor]) -> None:
    """The seed's 1,200/200 are defaults; a client may ask for others, within bounds."""
    client, app = docs
    r = client.post(
        "/api/documents/upload?chunk_size=300&overlap=50",
        files={"file": ("roma.txt", ITALIAN.encode())},
        headers=ALPHA,
    )
    assert r.status_code == 202
    document_id = r.json()["document_id"]
    assert poll(client, document_id)["status"] == "ready"
    details = client.get(f"/api/documents/{document_id}", headers=ALPHA).json()
    assert (details["doc_metadata"]["chunk_size"], details["doc_metadata"]["overlap"]) == (300, 50)
    chunks = client.get(f"/api/documents/{document_id}/chunks?limit=200", headers=ALPHA).json()["data"]
    assert max(c["tokens"] for c in chunks) == 300
    bad = client.post(
        "/api/documents/upload?chunk_size=300&overlap=300", files={"file": ("x.txt", b"words " * 10)}, headers=ALPHA
    )
    assert bad.status_code == 422
    assert "overlap" in bad.json()["error"]["message"]
    # Bounded: a tiny chunk size with an almost whole-chunk overlap made half a million chunks of 1 MiB.
    for query, field in (("chunk_size=16&overlap=15", "chunk_size"), ("chunk_size=300&overlap=151", "overlap")):
        hostile = client.post(f"/api/documents/upload?{query}", files={"file": ("x.txt", b"w " * 10)}, headers=ALPHA)
        assert hostile.status_code == 422, query
        assert hostile.json()["error"]["details"][0]["field"] == field
    assert client.get("/api/documents", headers=ALPHA).json()["count"] == 1
    assert len([p for p in files_under(app.settings.data_dir / "documents") if p.suffix == ".txt"]) == 1


def test_markdown_keeps_its_kind(docs: tuple[TestClient, Conveyor]) -> None:
    client, _ = docs
    r = upload(client, "README.md", b"# Guida\n\n" + ITALIAN.encode())
    assert r.json()["kind"] == "markdown"
    assert poll(client, r.json()["document_id"])["status"] == "ready"
    details = client.get(f"/api/documents/{r.json()['document_id']}", headers=ALPHA).json()
    assert details["language"] == "it"
    assert Path(details["metadata_file"]).parent.joinpath(f"{r.json()['document_id']}.md").exists()


def test_documents_on_a_store_without_sql_is_a_configuration_error(make_app: AppFactory) -> None:
    """The documents tables live in SQL: naming the workload on the in-memory (or Redis) store fails at start-up."""
    with pytest.raises(ConfigurationError, match="SQL store"):
        make_app(start=False, database_url="memory://", workloads=["system", "documents"])
    # Left to the defaults, it is simply not loaded, and /health says why.
    app = make_app(start=False, database_url="memory://")
    with TestClient(create_app(app, scheduler=False)) as client:
        assert client.get("/api/documents").status_code == 404
        workloads = client.get("/health").json()["workloads"]
        assert workloads["documents"]["status"] == "not loaded"
        assert "SQL store" in workloads["documents"]["reason"]


def test_the_migration_creates_the_tables_the_code_uses(docs: tuple[TestClient, Conveyor]) -> None:
    """The documents migration and tables.py agree on every column, on SQLite and PostgreSQL."""
    import sqlalchemy as sa

    from conveyor.workloads.documents.tables import chunks_table, documents_table

    _, app = docs
    engine = app.engine
    inspector = sa.inspect(engine)
    for table in (documents_table, chunks_table):
        # the search index's own columns (documents_0002) are written by the database, never by the code
        index_columns = {"search_rowid", "search_vector"}
        migrated = {
            c["name"]: c["nullable"] for c in inspector.get_columns(table.name) if c["name"] not in index_columns
        }
        declared = {c.name: c.nullable for c in table.columns}
        assert migrated == declared, table.name
    assert {"status", "processing_progress", "error_message", "doc_metadata", "processing_completed_at"} <= set(
        documents_table.c.keys()
    )


def test_cleanup_is_on_the_scheduler_every_hour(docs: tuple[TestClient, Conveyor]) -> None:
    from conveyor.scheduler import Scheduler

    _, app = docs
    jobs = {j.task_type: j for j in Scheduler(app.manager).jobs}
    assert jobs["documents.cleanup"].cron == "17 * * * *"
    assert app.registry.get("documents.cleanup").queue == "maintenance"
    assert app.registry.get("documents.process").queue == "documents"


#: runs in a fresh interpreter, with an in-memory broker and a worker thread of its own
_CELERY_CHECK = """
import json, sys, time
from pathlib import Path
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient
from conveyor import Conveyor, Settings
from conveyor.api.main import create_app
database_url, data_dir, text = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]).read_bytes()
app = Conveyor(Settings(data_dir=data_dir, database_url=database_url, executor="celery",
                        broker_url="memory://", workloads=["system", "documents"]))
with TestClient(create_app(app, scheduler=False)) as client, start_worker(
    app.executor.app, pool="solo", perform_ping_check=False, queues=["documents"], shutdown_timeout=10
):
    document_id = client.post("/api/documents/upload", files={"file": ("roma.txt", text)}).json()["document_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = client.get(f"/api/documents/{document_id}/status").json()
        if status["status"] != "processing":
            break
        time.sleep(0.1)
    task_id = client.get(f"/api/documents/{document_id}").json()["task_id"]
    app.manager.wait(task_id, timeout=30)  # the worker writes the task's outcome just after the document's
    print(json.dumps({"status": status, "details": client.get(f"/api/documents/{document_id}").json()}))
"""


def test_documents_run_unchanged_on_the_celery_executor(sql_database_url: str, tmp_path: Path) -> None:
    """The same task function under a Celery worker (in-memory broker): the document becomes ready."""
    import subprocess
    import sys

    text = tmp_path / "roma.txt"
    text.write_text(ITALIAN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", _CELERY_CHECK, sql_database_url, str(tmp_path / "data"), str(text)],
        env=env,
        capture_output=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert result["status"]["status"] == "ready", result
    assert result["details"]["language"] == "it"
    assert result["details"]["task_status"] == "SUCCESS"
    assert Path(result["details"]["metadata_file"]).exists()
