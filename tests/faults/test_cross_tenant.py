"""Tenant B tries every route that takes an id with tenant A's ids: every answer is 404, as for an unknown id.

Tenant A makes one of each kind of thing (a task, a document, a media
correction, a speech resource and attempt, movement logs); B then reads,
cancels, retries, downloads, searches and deletes them by id, and reads its
own lists. A reading the same routes gets its things (so the ids are real),
and after B's attempts they are all still there.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conveyor.api.main import create_app
from tests.conftest import AppFactory
from tests.faults.report import FaultReport, FaultRow
from tests.faults.samples import wav

A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
WORD = "zanzibarquokka"  # in A's document only: B's search must not find it


@pytest.fixture
def client(make_app: AppFactory) -> Iterator[TestClient]:
    app = make_app(
        start=False,
        api_keys={"key-a": "alpha", "key-b": "beta"},
        workloads=["system", "documents", "media", "speech", "movement_logs", "images"],
    )
    with TestClient(create_app(app, scheduler=False), raise_server_exceptions=False) as c:
        yield c


def wait_final(client: TestClient, task_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        record: dict[str, Any] = client.get(f"/api/v1/tasks/{task_id}", headers=A).json()
        if record["status"] in ("SUCCESS", "FAILURE", "CANCELLED") or time.monotonic() > deadline:
            return record
        time.sleep(0.1)


def tenant_a_things(client: TestClient) -> dict[str, str]:
    """One of each kind, made by tenant A and finished: their ids."""
    ids: dict[str, str] = {}
    r = client.post("/api/v1/tasks", json={"task_type": "system.sleep", "params": {"seconds": 0.1}}, headers=A)
    assert r.status_code == 202, r.text
    ids["task"] = r.json()["task_id"]
    text = f"A private report about the {WORD} of tenant A. " * 20
    r = client.post("/api/documents/upload", files={"file": ("a.txt", text.encode(), "text/plain")}, headers=A)
    assert r.status_code == 202, r.text
    ids["document"], ids["document_task"] = r.json()["document_id"], r.json()["task_id"]
    r = client.post("/corr/tasks/", files={"file": ("a.wav", wav(), "audio/wav")}, headers=A)
    assert r.status_code == 202, r.text
    ids["media"] = r.json()["task_id"]
    r = client.post("/api/resources", json={"title": "A's", "reference_text": "hello world"}, headers=A)
    assert r.status_code == 201, r.text
    ids["resource"] = r.json()["id"]
    chunk = base64.b64encode(wav(0.5)).decode()
    r = client.post(f"/api/resources/{ids['resource']}/attempts", json={"audio_chunks": [chunk]}, headers=A)
    assert r.status_code == 202, r.text
    ids["attempt_task"] = r.json()["task_id"]
    r = client.post(
        "/api/logs/add-movement/",
        json={"user_id": f"{WORD}-user", "track_id": 1, "bbox": [1, 1, 9, 9], "state": "walking", "store": "A"},
        headers=A,
    )
    assert r.status_code == 202, r.text
    r = client.post("/api/logs/process/", headers=A)
    assert r.status_code == 202, r.text
    ids["logs_task"] = r.json()["task_id"]
    for key in ("task", "document_task", "attempt_task", "logs_task"):
        assert wait_final(client, ids[key]).get("status") != "PENDING", (key, ids)
    attempts = client.get(f"/api/resources/{ids['resource']}/attempts", headers=A).json()["data"]
    assert attempts, "A's attempt was not recorded"
    ids["attempt"] = attempts[0]["id"]
    return ids


def by_id_routes(ids: dict[str, str]) -> list[tuple[str, str]]:
    """Every route that takes one of A's ids: (method, path)."""
    t, d, m, res, att = ids["task"], ids["document"], ids["media"], ids["resource"], ids["attempt"]
    routes = [("GET", f"/api/v1/tasks/{t}{tail}") for tail in ("", "/status/", "/result/", "/timeline", "/events")]
    routes += [("POST", f"/api/v1/tasks/{t}/cancel/"), ("POST", f"/api/v1/tasks/{t}/retry/")]
    routes += [("GET", f"/api/tasks/{t}/status"), ("GET", f"/api/tasks/{t}"), ("POST", f"/api/tasks/{t}/cancel")]
    routes += [("GET", f"/api/v1/tasks/{ids[k]}") for k in ("document_task", "attempt_task", "logs_task")]
    routes += [("GET", f"/api/documents/{d}{tail}") for tail in ("", "/status", "/chunks", f"/search?q={WORD}")]
    routes += [("GET", f"/corr/tasks/{m}/"), ("POST", f"/corr/tasks/{m}/cancel/")]
    routes += [("GET", f"/corr/tasks/{m}/output/{name}") for name in ("corrected.wav", "report.json")]
    routes += [("GET", f"/api/resources/{res}{tail}") for tail in ("", "/audio", "/attempts")]
    routes += [("POST", f"/api/resources/{res}/impressions"), ("GET", f"/api/attempts/{att}")]
    routes += [("POST", f"/api/resources/{res}/attempts")]
    routes += [("DELETE", f"/api/documents/{d}"), ("DELETE", f"/corr/tasks/{m}/")]  # last: they would remove
    return routes


def lists_of_b(client: TestClient) -> dict[str, str]:
    """What B's own lists and searches answer, as text (none may hold an id or the word of A)."""
    paths = [
        "/api/v1/tasks?limit=500",
        "/api/documents",
        f"/api/documents/search?q={WORD}",
        "/corr/tasks/",
        "/api/resources",
        "/api/logs/movements/",
        "/api/v1/images",
        "/api/v1/workers",
        "/api/v1/queues",
        "/api/v1/stats",
    ]
    seen = {}
    for path in paths:
        answer = client.get(path, headers=B).json()
        if isinstance(answer, dict):
            answer.pop("query", None)  # a search names its own query
        seen[path] = json.dumps(answer)
    return seen


def test_tenant_b_gets_404_for_every_route_with_tenant_a_ids_and_sees_none_in_its_lists(
    client: TestClient, fault_report: FaultReport
) -> None:
    ids = tenant_a_things(client)
    body = {"audio_chunks": [base64.b64encode(wav(0.2)).decode()]}
    routes = by_id_routes(ids)
    answers = {
        (method, path): client.request(method, path, headers=B, json=body if "attempts" in path else None)
        for method, path in routes
    }
    leaks = [f"{m} {p}: {r.status_code}" for (m, p), r in answers.items() if r.status_code != 404]
    listed = lists_of_b(client)
    secrets = [v for k, v in ids.items() if k != "logs_task"] + [WORD]
    leaks += [f"GET {p} shows {s}" for p, text in listed.items() for s in secrets if s in text]
    own = {path: client.get(path, headers=A).status_code for method, path in routes if method == "GET"}
    row = fault_report.add(
        FaultRow(
            fault="tenant B uses tenant A's ids on every id route and reads its own lists",
            setup="in-process API, local pool, SQLite, two tenant keys",
            cross_tenant_reads=len(leaks),
            notes=f"{len(routes)} id routes (tasks, documents, media, speech, logs' tasks) and {len(listed)} "
            "lists/searches; A's own GETs answered 200" + (f"; leaks: {'; '.join(leaks)}" if leaks else ""),
        ).count_statuses(r.status_code for r in answers.values())
    )
    assert leaks == []
    for r in answers.values():
        assert r.json()["error"]["code"].endswith("not_found"), r.text
    assert row.cross_tenant_reads == 0
    assert row.server_errors == 0
    # A's things are real and B's attempts changed none of them (its DELETEs came last).
    assert [p for p, status in own.items() if status != 200 and "/output/" not in p and "/events" not in p] == []
    assert client.get(f"/api/documents/{ids['document']}", headers=A).status_code == 200
    assert client.get(f"/corr/tasks/{ids['media']}/", headers=A).status_code == 200
    assert wait_final(client, ids["task"])["status"] == "SUCCESS"
