"""Seed 001's documents API over HTTP: upload, status, details, chunks, search, delete, and every refusal."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conveyor import Conveyor
from conveyor.api.main import create_app
from tests.conftest import AppFactory
from tests.documents_samples import HTML, ITALIAN, make_docx, make_encrypted_pdf, make_pdf

ALPHA = {"Authorization": "Bearer ka"}
BETA = {"Authorization": "Bearer kb"}


@pytest.fixture
def docs(make_app: AppFactory, sql_database_url: str) -> Iterator[tuple[TestClient, Conveyor]]:
    app = make_app(
        start=False,
        database_url=sql_database_url,
        api_keys="ka=alpha,kb=beta",
        workloads=["system", "documents"],
        documents_max_upload_mb=1,
        documents_quota_mb=3,
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
    status = poll(client, body["document_id"])
    assert status["status"] == "ready", status
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
    timeline = client.get(f"/api/v1/tasks/{body['task_id']}/timeline", headers=ALPHA).json()["data"]
    messages = [e["message"] for e in timeline]
    assert messages[0] == "Started"
    assert "Reading file" in messages or "Running encoder" in messages
    assert messages[-1] == "Completed"


def test_documents_are_listed_searched_and_deleted(docs: tuple[TestClient, Conveyor]) -> None:
    client, _app = docs
    roma = upload(client, "roma.txt", ITALIAN.encode()).json()["document_id"]
    other = upload(client, "fox.txt", b"The quick brown fox jumps over the lazy dog. " * 50).json()["document_id"]
    poll(client, roma)
    poll(client, other)
    listing = client.get("/api/documents?limit=1", headers=ALPHA).json()
    assert listing["count"] == 2
    assert listing["data"][0]["document_id"] == other
    hits = client.get("/api/documents/search?q=storia+di+Roma", headers=ALPHA).json()
    assert hits["data"][0]["document_id"] == roma
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
    ("content", "status"),
    [(b"", 415), (bytes(range(256)) * 20, 415), (b"\x7fELF\x02\x01\x01" + bytes(4000), 415)],
    ids=["zero-bytes", "binary-renamed-txt", "elf-renamed-txt"],
)
def test_unsupported_content_is_415_and_leaves_nothing(
    docs: tuple[TestClient, Conveyor], content: bytes, status: int
) -> None:
    client, app = docs
    r = upload(client, "notes.txt", content)
    assert r.status_code == status
    assert r.json()["error"]["code"] == "unsupported_media_type"
    assert files_under(app.settings.data_dir / "documents") == []


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
