"""Seed 001's test script, against `conveyor serve`: upload, poll every second, ready, metadata on disk.

Run on SQLite (the one-command default) and on PostgreSQL, with a 200-page
PDF made here by fpdf2, an Italian text, a Word document and an HTML page.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.server import Server
from tests.documents_samples import HTML, ITALIAN, make_docx, make_pdf

pytestmark = pytest.mark.slow

SEED_STEPS = ["Queued", "Started", "Reading file", "Running encoder", "Saving metadata", "Complete"]


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("uploads")
    return {
        "book.pdf": make_pdf(folder / "book.pdf", 200).read_bytes(),
        "roma.txt": ITALIAN.encode(),
        "report.docx": make_docx(folder / "report.docx").read_bytes(),
        "guide.html": HTML.encode(),
    }


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    env = {
        "CONVEYOR_WORKLOADS": "system,documents",
        "CONVEYOR_API_KEYS": "k=socrate",
        "CONVEYOR_DOCUMENTS_MAX_UPLOAD_MB": "4",
    }
    if request.param == "postgres":
        env["CONVEYOR_DATABASE_URL"] = request.getfixturevalue("clean_postgres_url")
    with Server(tmp_path / "srv", env=env) as srv:
        yield srv


def test_the_seed_flow_for_a_200_page_pdf_italian_text_docx_and_html(server: Server, uploads: dict[str, bytes]) -> None:
    with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer k"}, timeout=30) as client:
        ids = {}
        for name, content in uploads.items():
            r = client.post("/api/documents/upload", files={"file": (name, content)})
            assert r.status_code == 202, r.text
            body = r.json()
            assert (body["success"], body["status"]) == (True, "processing")
            assert body["message"]
            ids[name] = body["document_id"]
        for name, document_id in ids.items():
            deadline = time.monotonic() + 120
            seen: list[tuple[float, str]] = []
            while True:  # the seed's front end polls every second (it used two)
                status = client.get(f"/api/documents/{document_id}/status").json()
                seen.append((status["progress"], status["message"]))
                if status["status"] != "processing":
                    break
                assert status["task_state"] in ("PENDING", "PROCESSING")
                assert time.monotonic() < deadline
                time.sleep(1)
            assert status["status"] == "ready", (name, status)
            assert (status["ready"], status["task_state"], status["progress"]) == (True, "SUCCESS", 100)
            progress = [p for p, _ in seen]
            assert progress == sorted(progress), seen
            assert {m for _, m in seen[:-1]} <= set(SEED_STEPS), seen
            details = client.get(f"/api/documents/{document_id}").json()
            assert details["total_chunks"] == status["total_chunks"] >= 1
            assert details["tokens"] > 0
            assert details["language"] == ("it" if name == "roma.txt" else "en")
            assert details["task_status"] == "SUCCESS"
            assert details["processing_completed_at"] >= details["created_at"]
            metadata = Path(details["metadata_file"])
            assert metadata.name.endswith("_sections_metadata.json")
            assert len(json.loads(metadata.read_text())["sections"]) == details["total_chunks"]
            assert Path(details["index_file"]).exists()
        book = client.get(f"/api/documents/{ids['book.pdf']}").json()
        assert book["doc_metadata"]["pages"] == 200
        assert book["total_chunks"] > 50
        last = client.get(f"/api/documents/{ids['book.pdf']}/chunks", params={"offset": book["total_chunks"] - 1})
        assert last.json()["data"][0]["pages"][-1] == 200
        hits = client.get("/api/documents/search", params={"q": "storia di Roma"}).json()
        assert hits["data"][0]["document_id"] == ids["roma.txt"]
        listing = client.get("/api/documents", params={"limit": 2}).json()
        assert (listing["count"], len(listing["data"])) == (4, 2)
        assert client.get("/api/documents").status_code == 200
        assert httpx.get(f"{server.url}/api/documents", timeout=10).status_code == 401


def _documents_files(server: Server) -> list[Path]:
    root = server.cwd / "conveyor-data" / "documents"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _response(sock: socket.socket) -> tuple[int, dict[str, object]]:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body[body.index(b"{") :])


def test_an_oversized_upload_is_refused_before_its_body_is_read(server: Server) -> None:
    """413 from the declared length with no body sent, and mid-stream for a chunked body; nothing kept."""
    head = (
        "POST /api/documents/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
        "Content-Type: multipart/form-data; boundary=BOUNDARY\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"{head}Content-Length: {60 * 1024 * 1024}\r\n\r\n".encode())  # and never the body
        status, body = _response(sock)
    assert status == 413
    assert body["error"]["details"]["limit"] == "upload limit"  # type: ignore[index]

    piece = b"x" * (256 * 1024)
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
        start = b'--BOUNDARY\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'
        sock.sendall(b"%x\r\n%s\r\n" % (len(start), start))
        for _ in range(64):  # 16 MiB on offer against a 4 MiB limit
            if select.select([sock], [], [], 0.05)[0]:
                break  # the answer came: stop sending, as a client would
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        status, body = _response(sock)
    assert status == 413
    assert sent <= 6 * 1024 * 1024  # refused near the 4 MiB limit, long before the 16 MiB were sent
    assert _documents_files(server) == []
