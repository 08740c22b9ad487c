"""Hostile input answers 4xx at the edge, on SQLite and PostgreSQL, never a 500.

Each case was a 500 on the previous head: a lone surrogate in ``task_type``,
``queue`` or ``idempotency_key`` (it cannot be encoded as UTF-8), an integer
of 2**63 or more in ``after`` or ``offset`` (it overflows a database integer),
a NUL byte in an id, a filter or a param (PostgreSQL text cannot hold one).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conveyor.api.main import create_app
from tests.conftest import AppFactory


@pytest.fixture
def client(make_app: AppFactory, sql_database_url: str) -> Iterator[TestClient]:
    app = make_app(start=False, database_url=sql_database_url, workloads=["system"])
    with TestClient(create_app(app, scheduler=False), raise_server_exceptions=False) as c:
        yield c


SURROGATE_BODIES = [
    b'{"task_type": "\\ud800", "params": {}}',
    b'{"task_type": "system.ping", "queue": "\\udfff", "params": {}}',
    b'{"task_type": "system.ping", "idempotency_key": "a\\ud83d", "params": {}}',
    b'{"task_type": "system.ping", "params": {"payload": "\\ud800"}}',
]
NUL_BODIES = [
    b'{"task_type": "system.ping", "params": {"payload": "a\\u0000b"}}',
    b'{"task_type": "system.ping", "idempotency_key": "k\\u0000", "params": {}}',
    b'{"task_type": "sys\\u0000tem.ping", "params": {}}',
]


@pytest.mark.parametrize("body", SURROGATE_BODIES + NUL_BODIES)
def test_text_that_cannot_be_stored_is_refused_with_a_4xx(client: TestClient, body: bytes) -> None:
    r = client.post("/api/v1/tasks", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["code"] in {"bad_request", "invalid_params", "unknown_task_type"}


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/tasks/%00abc",
        "/api/v1/tasks/abc%00/status/",
        "/api/v1/tasks?type=system.ping%00",
        "/api/v1/tasks?q=ab%00",
        "/api/v1/tasks/%ED%A0%80/status/",
        "/api/v1/tasks?queue=%ED%A0%80",
        f"/api/v1/tasks?offset={2**63}",
        f"/api/v1/tasks?offset={2**70}",
        f"/api/v1/tasks/x/events?after={2**63}",
        f"/api/v1/tasks/x/timeline?after={2**64}",
    ],
)
def test_ids_and_filters_that_cannot_be_stored_are_refused_with_a_4xx(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
    assert "error" in r.json()


def test_a_wrong_method_on_an_api_path_is_a_json_405_with_the_routes_own_allow(client: TestClient) -> None:
    """Not the dashboard mount's 405 (``Allow: GET, HEAD``); an unknown API path is a JSON 404."""
    r = client.delete("/api/v1/tasks")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, POST"
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert client.put("/api/v1/tasks/abc/status/").headers["allow"] == "GET"
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_a_chunked_upload_over_the_body_limit_is_413(make_app: AppFactory) -> None:
    """No Content-Length to refuse early: the limit is met while the body streams, and the answer is 413."""
    app = make_app(start=False, max_body_mb=0.01, workloads=["system", "documents"])
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n' + b"x" * 50_000
    body += b"\r\n--b--\r\n"

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    with TestClient(create_app(app, scheduler=False)) as c:
        r = c.post(
            "/api/documents/upload", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
        )
        assert r.status_code == 413, r.text
        r = c.post("/api/v1/tasks", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_a_body_longer_than_its_content_length_is_read_only_to_that_length(make_app: AppFactory) -> None:
    """The body limit trusts a declared length (it counts only streamed bodies) because the HTTP server
    reads no more than it: on a real server the bytes past it are never this request's body."""
    import socket
    from urllib.parse import urlsplit

    from starlette.types import Message, Receive, Scope, Send

    from tests.live_server import live_server

    app = make_app(start=False, max_body_mb=0.01, workloads=["system"])
    api = create_app(app, scheduler=False)
    received: list[int] = []

    async def counting(scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                received.append(len(message.get("body", b"")))
            return message

        await api(scope, counted if scope["type"] == "http" else receive, send)

    body = b'{"task_type": "system.ping", "params": {}}'
    junk = b"x" * 50_000  # five times the limit
    with live_server(counting) as url:
        where = urlsplit(url)
        with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
            head = "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body + junk)
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(65536)
    assert answer.split(b" ")[1] in (b"202", b"400"), answer[:300]  # uvicorn may refuse the junk first
    assert sum(received) <= len(body)


def test_an_upload_with_a_boundary_too_long_to_parse_or_a_name_too_long_to_store_is_4xx(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """A 300-character boundary (the parser takes 256) and a file name of 100 CJK characters (300 bytes,
    past a file system's 255) were both 500s; the name is cut to fit, and the boundary is a 400."""
    database_url = f"sqlite:///{tmp_path / 'u.db'}"
    app = make_app(start=False, database_url=database_url, workloads=["system", "documents", "media"])
    boundary = "b" * 300
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhello\r\n'
    body += f"--{boundary}--\r\n"
    multipart = {"content-type": f"multipart/form-data; boundary={boundary}"}
    with TestClient(create_app(app, scheduler=False), raise_server_exceptions=False) as c:
        for path in ("/api/documents/upload", "/corr/tasks/"):
            r = c.post(path, content=body.encode(), headers=multipart)
            assert r.status_code == 400, (path, r.text)
            assert "could not be read" in r.json()["error"]["message"]
        r = c.post("/corr/tasks/", files={"file": ("文" * 100 + ".wav", b"not really a wav")})
        assert r.status_code == 415, r.text  # read as what it is, under a name that fits


def test_openapi_describes_the_submit_body_the_errors_and_the_event_streams(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/tasks", "/api/v1/tasks/submit/"):
        post = paths[path]["post"]
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        assert "task_type" in schema["required"]
        assert {"400", "401", "413", "415", "422", "429", "503"} <= set(post["responses"])
    for path in ("/api/v1/tasks/{task_id}/events", "/api/v1/events"):
        assert "text/event-stream" in paths[path]["get"]["responses"]["200"]["content"]
