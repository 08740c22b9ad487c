"""The hostile-upload set on every upload route: a 4xx JSON answer, never a 5xx, and nothing stored.

Documents (``/api/documents/upload``), media corrections (``/corr/tasks/``),
images (multipart ``/api/v1/tasks``) and speech attempts (base64 JSON on
``/api/resources/{id}/attempts``) each get: a body over the limit with its
Content-Length (413), the same chunked with no length (413), a file named
to climb out of the storage folder, a wrong content type, an empty file, a
multipart body cut short, and a filename that is not UTF-8. A refused
request leaves no file behind; a traversal name never writes outside the
tenant's folder.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conveyor.api.main import create_app
from tests.conftest import AppFactory
from tests.faults.report import FaultReport, FaultRow
from tests.faults.samples import png, wav

LIMIT_MB = 0.25
OVER = b"x" * int(LIMIT_MB * 2**20 * 1.5)
BOUNDARY = "hostileboundary"
TEXT = b"A short plain text document.\n" * 10


def multipart(field: str, filename: bytes, content: bytes, content_type: str, *, fields: dict[str, str]) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="'.encode()
    parts.append(head + filename + f'"\r\nContent-Type: {content_type}\r\n\r\n'.encode() + content + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def chunked(body: bytes) -> Iterator[bytes]:
    for i in range(0, len(body), 16_384):
        yield body[i : i + 16_384]


#: route -> (path, file field, other form fields, a valid file, its type)
MULTIPART_ROUTES: dict[str, tuple[str, str, dict[str, str], bytes, str]] = {
    "documents": ("/api/documents/upload", "file", {}, TEXT, "text/plain"),
    "media": ("/corr/tasks/", "file", {}, wav(), "audio/wav"),
    "images": ("/api/v1/tasks", "image", {"task_type": "background_removal"}, b"", "image/png"),
}


def multipart_cases(field: str, fields: dict[str, str], valid: bytes, ctype: str) -> list[tuple[str, Any, str]]:
    """(case, body, expected class) for one multipart route: "413", "4xx", or "no 5xx" (may be accepted)."""
    good = valid or png()
    full = multipart(field, b"../../../../escape.txt", good, ctype, fields=fields)
    return [
        ("oversized", multipart(field, b"big.txt", OVER, ctype, fields=fields), "413"),
        ("chunked over the limit", chunked(multipart(field, b"big.txt", OVER, ctype, fields=fields)), "413"),
        ("path-traversal filename", full, "no 5xx"),
        ("wrong content type", multipart(field, b"a.exe", b"MZ\x90\x00" + b"\x00" * 200, ctype, fields=fields), "4xx"),
        ("empty file", multipart(field, b"empty.txt", b"", ctype, fields=fields), "4xx"),
        ("truncated multipart", full[: len(full) // 2], "4xx"),
        (
            "non-UTF-8 filename",
            multipart(field, b"caf\xe9\xff\xfe.txt", good, ctype, fields=fields),
            "no 5xx",
        ),
    ]


@pytest.fixture
def client(make_app: AppFactory, tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    limits = {"max_upload_mb": LIMIT_MB}
    app = make_app(
        start=False,
        api_keys={"key-a": "alpha"},
        max_body_mb=1,
        workloads=["system", "documents", "media", "images", "speech"],
        workload_settings={"documents": limits, "media": limits, "images": {"max_body_mb": LIMIT_MB}},
    )
    with TestClient(create_app(app, scheduler=False), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = "Bearer key-a"
        yield c, app.settings.data_dir


def stored_files(data_dir: Path) -> set[Path]:
    """Every file a request could have left: all but the databases and their journals.

    Task outputs are left out: a task an earlier (accepted) case started may
    write its output while a later case is being sent. Only accepted
    requests start tasks, so a refused one cannot be the cause of an output.
    """
    return {
        p
        for p in data_dir.rglob("*")
        if p.is_file() and ".db" not in p.name and "outputs" not in p.relative_to(data_dir).parts
    }


def test_hostile_uploads_on_every_upload_route_are_4xx_json_never_5xx_and_store_nothing(
    client: tuple[TestClient, Path], tmp_path: Path, fault_report: FaultReport
) -> None:
    c, data_dir = client
    resource = c.post("/api/resources", json={"title": "t", "reference_text": "hello", "synthesize": False})
    assert resource.status_code == 201, resource.text
    speech_path = f"/api/resources/{resource.json()['id']}/attempts"
    statuses: list[int] = []
    broken: list[str] = []

    def send(route: str, case: str, path: str, body: Any, content_type: str, expect: str) -> None:
        before = stored_files(data_dir)
        r = c.post(path, content=body, headers={"Content-Type": content_type})
        statuses.append(r.status_code)
        label = f"{route} / {case}: {r.status_code}"
        try:
            error = r.json().get("error") if r.status_code >= 400 else None
        except ValueError:
            error = None
        if r.status_code >= 500:
            broken.append(f"{label} (a server error)")
        elif expect == "413" and r.status_code != 413:
            broken.append(f"{label} (expected 413)")
        elif expect == "4xx" and not 400 <= r.status_code < 500:
            broken.append(f"{label} (expected a 4xx)")
        if r.status_code >= 400 and not (isinstance(error, dict) and error.get("code")):
            broken.append(f"{label} (not a JSON error body)")
        new = stored_files(data_dir) - before
        if r.status_code >= 400 and new:
            broken.append(f"{label} left {sorted(str(p.relative_to(data_dir)) for p in new)}")
        outside = [p for p in tmp_path.rglob("escape*") if data_dir not in p.parents]
        if outside:
            broken.append(f"{label} wrote outside the data folder: {outside}")

    for route, (path, field, fields, valid, ctype) in MULTIPART_ROUTES.items():
        for case, body, expect in multipart_cases(field, fields, valid, ctype):
            send(route, case, path, body, f"multipart/form-data; boundary={BOUNDARY}", expect)
        send(route, "a JSON body where a file is expected", path, b'{"file": "x"}', "application/json", "4xx")

    chunk = base64.b64encode(b"RIFF" + b"\x00" * 100).decode()
    speech_over = b'{"audio_chunks": ["' + base64.b64encode(b"x" * 2**20) + b'"]}'
    speech_cases = [
        ("oversized", speech_over, "application/json", "413"),
        ("chunked over the limit", chunked(speech_over), "application/json", "413"),
        ("wrong content type", b"audio_chunks=abc", "application/x-www-form-urlencoded", "4xx"),
        ("empty audio", b'{"audio_chunks": []}', "application/json", "4xx"),
        ("not base64", b'{"audio_chunks": ["%%% not base64 %%%"]}', "application/json", "4xx"),
        ("truncated JSON", f'{{"audio_chunks": ["{chunk}'.encode(), "application/json", "4xx"),
        ("non-UTF-8 body", b'{"audio_chunks": ["\xff\xfe"]}', "application/json", "4xx"),
    ]
    for case, body, content_type, expect in speech_cases:
        send("speech", case, speech_path, body, content_type, expect)

    row = fault_report.add(
        FaultRow(
            fault="the hostile-upload set on every upload route",
            setup="in-process API, SQLite; documents, media, images, speech attempts",
            notes=f"{len(statuses)} hostile requests over 4 routes; refused ones left no file"
            + (f"; broken: {'; '.join(broken)}" if broken else ""),
        ).count_statuses(statuses)
    )
    assert broken == []
    assert row.server_errors == 0
