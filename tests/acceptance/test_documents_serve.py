"""Seed 001's test script, against `conveyor serve`: upload, poll every second, ready, metadata on disk."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.acceptance.server import Server
from tests.documents_samples import HTML, ITALIAN, make_docx, make_pdf

pytestmark = pytest.mark.slow


def test_the_seed_flow_for_a_200_page_pdf_italian_text_docx_and_html(tmp_path: Path) -> None:
    uploads = {
        "book.pdf": make_pdf(tmp_path / "book.pdf", 200).read_bytes(),
        "roma.txt": ITALIAN.encode(),
        "report.docx": make_docx(tmp_path / "report.docx").read_bytes(),
        "guide.html": HTML.encode(),
    }
    env = {"CONVEYOR_WORKLOADS": "system,documents", "CONVEYOR_API_KEYS": "k=socrate"}
    with (
        Server(tmp_path / "srv", env=env) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": "Bearer k"}, timeout=30) as client,
    ):
        ids = {}
        for name, content in uploads.items():
            r = client.post("/api/documents/upload", files={"file": (name, content)})
            assert r.status_code == 202, r.text
            assert r.json()["status"] == "processing"
            ids[name] = r.json()["document_id"]
        for name, document_id in ids.items():
            deadline = time.monotonic() + 120
            while True:  # the seed's front end polls every second (it used two)
                status = client.get(f"/api/documents/{document_id}/status").json()
                if status["status"] != "processing":
                    break
                assert time.monotonic() < deadline
                time.sleep(1)
            assert status["status"] == "ready", (name, status)
            details = client.get(f"/api/documents/{document_id}").json()
            assert details["total_chunks"] >= 1
            assert details["tokens"] > 0
            assert details["language"] == ("it" if name == "roma.txt" else "en")
            assert Path(details["metadata_file"]).exists()
        book = client.get(f"/api/documents/{ids['book.pdf']}").json()
        assert book["doc_metadata"]["pages"] == 200
        last = client.get(f"/api/documents/{ids['book.pdf']}/chunks", params={"offset": book["total_chunks"] - 1})
        assert last.json()["data"][0]["pages"][-1] == 200
