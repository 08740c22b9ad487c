"""Resources, impressions, ratings and sessions over seed 002's routes, and every refusal."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conveyor import Conveyor
from conveyor.workloads.speech import db
from conveyor.workloads.speech.ratings import compute_rating
from tests.workloads.speech.conftest import ALPHA, BETA, OPERATOR, create_resource, wait_task


def _engine(app: Conveyor) -> sa.Engine:
    return app.engine


def add_attempt(app: Conveyor, resource_id: str, attempt_id: str, score: float | None, status: str = "done") -> None:
    db.save_attempt(
        _engine(app), attempt_id, tenant="alpha", resource_id=resource_id, user_name="u", status=status, score=score
    )


def independent_rating(scores: list[float], impressions: int) -> float:
    """The documented formula, written out again here rather than imported."""
    n = len(scores)
    quality = (sum(scores) + 50 * 5) / (n + 5)
    practice = n / max(impressions, n) if n else 0.0
    return round(0.9 * quality + 10 * practice, 2)


def test_a_resource_is_created_with_an_id_and_its_reference_audio_is_made(speech: tuple[TestClient, Conveyor]) -> None:
    """``POST /api/resources {title, reference_text}`` answers with ``id``; speech.synthesize makes its WAV."""
    client, _app = speech
    r = client.post("/api/resources", json={"title": "Door", "reference_text": "please open the door"}, headers=ALPHA)
    assert r.status_code == 201
    body = r.json()
    assert (body["title"], body["reference_text"], body["rating"]) == ("Door", "please open the door", None)
    task = wait_task(client, body["audio_task_id"])
    assert task["status"] == "SUCCESS", task
    assert task["result"]["engine"] == "flite"
    audio = client.get(f"/api/resources/{body['id']}/audio", headers=ALPHA)
    assert audio.status_code == 200
    assert audio.headers["content-type"] == "audio/wav"
    assert audio.content[:4] == b"RIFF"
    listed = client.get("/api/resources", headers=ALPHA).json()
    assert (listed["count"], listed["data"][0]["id"]) == (1, body["id"])
    assert client.get("/api/resources", headers=BETA).json() == {"data": [], "count": 0}
    assert client.get(f"/api/resources/{body['id']}", headers=BETA).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reference_text": "x"}, "title"),
        ({"title": "x"}, "reference_text"),
        ({"title": "  ", "reference_text": "x"}, "title"),
        ({"title": "x", "reference_text": 5}, "reference_text"),
        ({"title": "x", "reference_text": "y", "colour": "red"}, "colour"),
        ({"title": "x" * 301, "reference_text": "y"}, "title"),
    ],
)
def test_a_bad_resource_body_is_a_422_naming_the_field(
    sqlite_speech: tuple[TestClient, Conveyor], body: dict[str, Any], field: str
) -> None:
    """Each bad field is named in the error's details."""
    client, _app = sqlite_speech
    r = client.post("/api/resources", json=body, headers=ALPHA)
    assert r.status_code == 422
    assert field in [d["field"] for d in r.json()["error"]["details"]]


def test_unreadable_bodies_and_unknown_ids_get_clear_4xx_answers(sqlite_speech: tuple[TestClient, Conveyor]) -> None:
    """Malformed JSON 400, a form body 415, no key 401, unknown resource or attempt 404, audio not made yet 404."""
    client, _app = sqlite_speech
    r = client.post("/api/resources", content=b"{nope", headers={**ALPHA, "content-type": "application/json"})
    assert r.status_code == 400
    assert "malformed JSON" in r.json()["error"]["message"]
    r = client.post("/api/resources", data={"title": "x"}, headers=ALPHA)
    assert r.status_code == 415
    assert client.post("/api/resources", json={"title": "x", "reference_text": "y"}).status_code == 401
    for method, path in [
        ("GET", "/api/resources/nope"),
        ("GET", "/api/resources/nope/audio"),
        ("GET", "/api/resources/nope/attempts"),
        ("POST", "/api/resources/nope/impressions"),
        ("GET", "/api/attempts/nope"),
    ]:
        r = client.request(method, path, headers=ALPHA)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["code"] in ("resource_not_found", "attempt_not_found")
    resource_id = create_resource(client, "hello world", synthesize=False)
    r = client.get(f"/api/resources/{resource_id}/audio", headers=ALPHA)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "audio_not_found")
    r = client.post(f"/api/resources/{resource_id}/impressions", json={"count": 0}, headers=ALPHA)
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "count"
    r = client.post(f"/api/resources/{resource_id}/attempts", json={"audio_chunks": []}, headers=ALPHA)
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "audio_chunks"
    r = client.post("/api/tasks/rating/recalculate", json={"resource_id": "nope"}, headers=ALPHA)
    assert r.status_code == 404
    r = client.post("/api/tasks/rating/recalculate", json={"resource_id": 7}, headers=ALPHA)
    assert (r.status_code, r.json()["error"]["details"][0]["field"]) == (422, "resource_id")


def test_an_unknown_resource_ends_the_speech_task_failure_saying_so(sqlite_speech: tuple[TestClient, Conveyor]) -> None:
    """``process_speak_audio`` for a resource that does not exist: FAILURE naming it."""
    _client, app = sqlite_speech
    task_id = app.manager.submit("process_speak_audio", "no-such-resource", ["AAAA"], "ann", tenant="alpha")
    record = app.manager.wait(task_id, timeout=30)
    assert record.state.value == "FAILURE"
    assert record.error is not None
    assert record.error["message"] == "resource no-such-resource does not exist"


def test_impressions_count_at_once_and_reach_sql_on_sync(speech: tuple[TestClient, Conveyor]) -> None:
    """Posts add to the pending counter; the sync moves them into the resource's SQL total."""
    client, _app = speech
    resource_id = create_resource(client, "hello world", synthesize=False)
    for _ in range(3):
        assert client.post(f"/api/resources/{resource_id}/impressions", headers=ALPHA).status_code == 202
    client.post(f"/api/resources/{resource_id}/impressions", json={"count": 4}, headers=ALPHA)
    before = client.get(f"/api/resources/{resource_id}", headers=ALPHA).json()
    assert (before["impressions"], before["impressions_pending"]) == (0, 7)
    assert client.post("/api/tasks/impressions/sync", headers=ALPHA).status_code == 403  # a tenant's key
    r = client.post("/api/tasks/impressions/sync", headers=OPERATOR)
    assert r.status_code == 202
    synced = wait_task(client, r.json()["task_id"], headers=OPERATOR)
    assert synced["status"] == "SUCCESS", synced["error"]
    assert synced["result"] == {
        "moved": 7,
        "batches": 0,
        "already_applied": 0,
        "backend": "sql",
    }
    after = client.get(f"/api/resources/{resource_id}", headers=ALPHA).json()
    assert (after["impressions"], after["impressions_pending"]) == (7, 0)


def test_ratings_match_figures_computed_independently_and_running_twice_changes_nothing(
    speech: tuple[TestClient, Conveyor],
) -> None:
    """calculate_rating and calculate_all_ratings: the documented formula, idempotent."""
    client, app = speech
    engine = _engine(app)
    cases = {
        "none": ([], 0),
        "one-perfect": ([100.0], 0),
        "many": ([90.0, 80.0, 70.5, 100.0, 60.0, 95.0], 10),
        "few-shown-often": ([40.0, 50.0], 1000),
    }
    ids: dict[str, str] = {}
    for name, (scores, impressions) in cases.items():
        resource_id = create_resource(client, f"text {name}", synthesize=False)
        ids[name] = resource_id
        for i, score in enumerate(scores):
            add_attempt(app, resource_id, f"{name}-{i}", score)
        add_attempt(app, resource_id, f"{name}-failed", None, status="failed")  # not counted
        if impressions:
            db.apply_impression_batch(engine, f"seed-{name}", {resource_id: impressions})
    expected = {name: independent_rating(*case) for name, case in cases.items()}
    assert expected["one-perfect"] < expected["many"]  # one reading does not outrank many good ones

    r = client.post("/api/tasks/rating/recalculate", json={"resource_id": ids["many"]}, headers=ALPHA)
    one = wait_task(client, r.json()["task_id"])
    assert one["type"] == "speech.calculate_rating"
    assert one["result"]["rating"] == expected["many"]
    assert one["result"]["average_score"] == round(sum(cases["many"][0]) / 6, 2)

    results = []
    for _ in range(2):
        r = client.post("/api/tasks/rating/recalculate", headers=ALPHA)
        assert r.status_code == 202
        results.append(wait_task(client, r.json()["task_id"])["result"])
    assert results[0] == results[1]
    assert results[0]["ratings"] == {ids[name]: expected[name] for name in cases}
    for name, (scores, impressions) in cases.items():
        shown = client.get(f"/api/resources/{ids[name]}", headers=ALPHA).json()
        assert shown["rating"] == expected[name]
        assert shown["attempts_count"] == len(scores)
        assert shown["impressions"] == impressions
    # beta's recalculation touches none of alpha's resources
    r = client.post("/api/tasks/rating/recalculate", headers=BETA)
    assert wait_task(client, r.json()["task_id"], headers=BETA)["result"] == {"resources": 0, "ratings": {}}


def test_the_rating_formula_pure(sqlite_speech: tuple[TestClient, Conveyor]) -> None:
    """compute_rating against hand-worked figures."""
    assert compute_rating([], 0).rating == 45.0  # 0.9 * 50
    r = compute_rating([100.0, 80.0], 4)  # quality (180 + 250) / 7 = 61.43; practice 0.5
    assert (r.rating, r.average_score, r.attempts, r.impressions) == (60.29, 90.0, 2, 4)


def test_expired_sessions_are_removed_and_live_ones_kept(speech: tuple[TestClient, Conveyor]) -> None:
    """cleanup_sessions deletes sessions past their expiry only; the practice socket opens one."""
    client, app = speech
    engine = _engine(app)
    resource_id = create_resource(client, "hello world", synthesize=False)
    now = time.time()
    db.create_session(engine, "old", ttl=60, now=now - 3600, tenant="alpha")
    db.create_session(engine, "fresh", ttl=3600, now=now, tenant="beta")
    with client.websocket_connect(f"/api/speech/stream/{resource_id}", headers=ALPHA) as ws:
        session_id = ws.receive_json()["session_id"]
    assert db.session(engine, session_id).status == "closed"  # type: ignore[union-attr]
    r = client.post("/api/tasks/cleanup/sessions", headers=OPERATOR)
    assert r.status_code == 202
    assert wait_task(client, r.json()["task_id"], headers=OPERATOR)["result"] == {"deleted": 1}
    assert db.session(engine, "old") is None
    assert db.session(engine, "fresh") is not None
    assert db.session(engine, session_id) is not None


def test_maintenance_types_are_internal_and_the_periodic_jobs_name_them(
    sqlite_speech: tuple[TestClient, Conveyor],
) -> None:
    """A tenant cannot submit the sync or the cleanup through /api/v1/tasks; the scheduler runs both."""
    client, app = sqlite_speech
    r = client.post("/api/v1/tasks", json={"task_type": "sync_impressions_from_redis"}, headers=ALPHA)
    assert r.status_code in (400, 404)
    names = client.get("/api/v1/task-types", headers=ALPHA).text
    assert "speech.process_speak_audio" in names
    assert "speech.cleanup_sessions" not in names
    from conveyor.workloads.speech import workload

    assert {j.task_type for j in workload.periodic_jobs} == {
        "speech.sync_impressions_from_redis",
        "speech.cleanup_sessions",
    }
    assert all(j.task_type in app.registry for j in workload.periodic_jobs)


def test_the_dashboard_page_is_listed_and_served(sqlite_speech: tuple[TestClient, Conveyor]) -> None:
    """``/api/v1/workloads`` names the speech page; the shell can import it from ``/workloads/speech/page.js``."""
    client, _app = sqlite_speech
    listed = client.get("/api/v1/workloads", headers=ALPHA).json()
    speech = next(w for w in listed["data"] if w["name"] == "speech")
    assert "speech.process_speak_audio" in str(speech)
    page = client.get("/workloads/speech/page.js")
    assert page.status_code == 200
    assert "export const routes" in page.text
    assert "export const nav" in page.text
