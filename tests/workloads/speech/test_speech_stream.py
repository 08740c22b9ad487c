"""Readings over the practice WebSocket: flite speech in, progress and transcripts out, scored by WER."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from conveyor import Conveyor
from conveyor.api.main import create_app
from conveyor.workloads.speech.scoring import align, normalize
from tests.conftest import AppFactory
from tests.workloads.speech.conftest import (
    ALPHA,
    BETA,
    as_chunks,
    create_resource,
    flite_wav,
    need_tools,
    speech_app,
    wait_task,
)

#: chosen before the recogniser heard them: everyday short sentences, some it gets wrong
SENTENCES = [
    "hello world",
    "please open the door",
    "the weather is nice today",
    "my name is john",
    "where is the train station",
    "i would like a cup of coffee",
    "she reads a book every night",
    "the quick brown fox jumps over the lazy dog",
    "thank you very much",
    "good morning everyone",
    "how are you today",
    "i like to play football",
    "the cat is on the table",
    "we are going to the park",
    "can you help me please",
    "this is a good idea",
    "the sun is shining",
    "i am learning english",
    "he drinks water every day",
    "what time is it",
]


def read_aloud(
    client: TestClient, resource_id: str, chunks: list[str], *, user: str = "ann", as_json: bool = False
) -> list[dict[str, Any]]:
    """One reading over the socket, as the seed's front end sends it; every message the server sent back."""
    received: list[dict[str, Any]] = []
    with client.websocket_connect(f"/api/speech/stream/{resource_id}?user_name={user}&api_key=ka") as ws:
        received.append(ws.receive_json())
        for chunk in chunks:
            ws.send_text(json.dumps({"type": "audio", "data": chunk}) if as_json else chunk)
        ws.send_text(json.dumps({"type": "end"}) if as_json else "end")
        while received[-1]["type"] not in ("result", "error"):
            received.append(ws.receive_json())
    return received


@pytest.mark.slow
def test_twenty_flite_sentences_over_the_websocket_transcribe_within_25_percent_wer(
    sqlite_speech: tuple[TestClient, Conveyor],
) -> None:
    """20 synthesised sentences sent as chunks: progress on the socket, transcripts with WER <= 25 % overall."""
    client, _app = sqlite_speech
    work = []
    for text in SENTENCES:
        resource_id = create_resource(client, text, synthesize=False)
        work.append((text, resource_id, as_chunks(flite_wav(text))))
    results: dict[str, list[dict[str, Any]]] = {}

    def reader(share: list[tuple[str, str, list[str]]], as_json: bool) -> None:
        for text, resource_id, chunks in share:
            results[text] = read_aloud(client, resource_id, chunks, as_json=as_json)

    # Two sockets at once, one per local worker process: half the wall time.
    threads = [threading.Thread(target=reader, args=(work[i::2], i == 1)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    errors = words = 0
    for text, _resource_id, _chunks in work:
        messages = results[text]
        assert messages[0]["type"] == "ready"
        assert messages[1]["type"] == "accepted"
        progress = [m for m in messages if m["type"] == "progress"]
        assert "Transcribing" in " ".join(m["message"] for m in progress), progress
        assert progress[-1]["status"] == "SUCCESS"
        assert [m["progress"] for m in progress] == sorted(m["progress"] for m in progress)
        final = messages[-1]
        assert final["type"] == "result", final
        alignment = align(normalize(text), normalize(final["transcript"]))
        assert final["wer"] == round(alignment.wer, 4)
        errors += alignment.errors
        words += alignment.reference_words
        for w in final["words"]:
            assert 0 <= w["start"] < w["end"] <= final["audio_seconds"] + 0.05
    wer = errors / words
    print(f"WER over {len(SENTENCES)} sentences: {wer:.3f} ({errors} errors in {words} words)")
    assert wer <= 0.25


def test_a_reading_is_stored_on_the_users_attempt_with_word_timings_and_a_score(
    speech: tuple[TestClient, Conveyor],
) -> None:
    """The result is on the attempt: transcript, words with times, WER and a 0-100 score."""
    client, _app = speech
    text = "we are going to the park"
    resource_id = create_resource(client, text, synthesize=False)
    final = read_aloud(client, resource_id, as_chunks(flite_wav(text)), user="bob")[-1]
    assert final["type"] == "result"
    attempts = client.get(f"/api/resources/{resource_id}/attempts?user_name=bob", headers=ALPHA).json()
    assert attempts["count"] == 1
    attempt = attempts["data"][0]
    assert (attempt["status"], attempt["user_name"], attempt["id"]) == ("done", "bob", final["task_id"])
    assert attempt["transcript"] == final["transcript"] == "we are going to the park"
    assert [w["word"] for w in attempt["words"]] == text.split()
    assert (attempt["wer"], attempt["score"]) == (0.0, 100.0)
    assert client.get(f"/api/attempts/{attempt['id']}", headers=ALPHA).json()["words"] == attempt["words"]
    assert client.get(f"/api/attempts/{attempt['id']}", headers=BETA).status_code == 404


@pytest.mark.parametrize("fmt", ["webm", "ogg", "mp3"])
def test_browser_formats_decode_through_ffmpeg_or_libsndfile(
    sqlite_speech: tuple[TestClient, Conveyor], tmp_path: Path, fmt: str
) -> None:
    """WebM/Opus (a browser's MediaRecorder), Ogg/Vorbis and MP3 transcribe like the WAV."""
    need_tools("ffmpeg")
    client, _app = sqlite_speech
    text = "i want to go home"
    wav = tmp_path / "in.wav"
    wav.write_bytes(flite_wav(text))
    out = tmp_path / f"in.{fmt}"
    codec = {"webm": ["-c:a", "libopus"], "ogg": ["-c:a", "libvorbis"], "mp3": ["-c:a", "libmp3lame"]}[fmt]
    # At flite's 8 kHz LAME falls back to 8 kbit/s MPEG-2.5, which no recogniser reads; 16 kHz at
    # 64 kbit/s is what a recording app writes.
    rate = ["-ar", "16000", "-b:a", "64k"]
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), *rate, *codec, str(out)], check=True)
    resource_id = create_resource(client, text, synthesize=False)
    final = read_aloud(client, resource_id, as_chunks(out.read_bytes()))[-1]
    assert final["type"] == "result", final
    assert final["wer"] <= 0.25, final["transcript"]


def test_corrupt_audio_ends_failure_naming_the_decoder_error(sqlite_speech: tuple[TestClient, Conveyor]) -> None:
    """Bytes no decoder reads: FAILURE whose error says what libsndfile and ffmpeg said."""
    client, _app = sqlite_speech
    resource_id = create_resource(client, "hello world", synthesize=False)
    junk = as_chunks(b"RIFF\x00\x00\x00\x00WAVEfmt " + os.urandom(3000))
    final = read_aloud(client, resource_id, junk)[-1]
    assert (final["type"], final["status"]) == ("error", "FAILURE")
    assert "could not decode the audio" in final["message"]
    assert "soundfile:" in final["message"]
    assert "ffmpeg:" in final["message"]
    record = wait_task(client, final["task_id"])
    assert record["error"]["type"] == "AudioDecodeError"
    attempt = client.get(f"/api/attempts/{final['task_id']}", headers=ALPHA).json()
    assert attempt["status"] == "failed"
    assert "could not decode" in attempt["error_message"]


def test_chunks_that_are_not_base64_fail_naming_the_chunk(sqlite_speech: tuple[TestClient, Conveyor]) -> None:
    """A chunk that is not base64 is refused at the edge (422), named by its index; no task is made."""
    client, _app = sqlite_speech
    resource_id = create_resource(client, "hello world", synthesize=False)
    r = client.post(
        f"/api/resources/{resource_id}/attempts",
        json={"audio_chunks": [base64.b64encode(b"abc").decode(), "%%% not base64"]},
        headers=ALPHA,
    )
    assert r.status_code == 422, r.text
    assert "chunk 1 is not valid base64" in r.text
    assert "task_id" not in r.json()


def test_binary_frames_are_audio_too(sqlite_speech: tuple[TestClient, Conveyor]) -> None:
    """Raw binary frames work as base64 ones do."""
    client, _app = sqlite_speech
    text = "thank you very much"
    resource_id = create_resource(client, text, synthesize=False)
    wav = flite_wav(text)
    with client.websocket_connect(f"/api/speech/stream/{resource_id}", headers=ALPHA) as ws:
        assert ws.receive_json()["type"] == "ready"
        for i in range(0, len(wav), 4096):
            ws.send_bytes(wav[i : i + 4096])
        ws.send_text("end")
        assert ws.receive_json()["type"] == "accepted"
        while (m := ws.receive_json())["type"] not in ("result", "error"):
            pass
    assert m["type"] == "result"
    assert m["transcript"] == text


def test_a_reading_posted_over_http_streams_its_progress_on_sse(sqlite_speech: tuple[TestClient, Conveyor]) -> None:
    """``POST /api/resources/{id}/attempts`` takes the same chunks; its progress is on the task's SSE stream."""
    client, _app = sqlite_speech
    text = "the quick brown fox jumps over the lazy dog"
    resource_id = create_resource(client, text, synthesize=False)
    r = client.post(
        f"/api/resources/{resource_id}/attempts",
        json={"audio_chunks": as_chunks(flite_wav(text)), "user_name": "cy"},
        headers=ALPHA,
    )
    assert r.status_code == 202
    task_id = r.json()["task_id"]
    with client.stream("GET", f"/api/v1/tasks/{task_id}/events", headers=ALPHA) as events:
        states = [json.loads(line[5:]) for line in events.iter_lines() if line.startswith("data:")]
    assert states[-1]["status"] == "SUCCESS"
    assert any(e["status"] == "PROCESSING" and 0 < e["progress"] < 100 for e in states), states


def test_the_stream_refuses_unknown_resources_missing_keys_and_bad_frames(
    sqlite_speech: tuple[TestClient, Conveyor],
) -> None:
    """Each refusal is a JSON error frame naming the problem (and a close code when the socket cannot go on)."""
    client, _app = sqlite_speech
    resource_id = create_resource(client, "hello world", synthesize=False)
    with client.websocket_connect("/api/speech/stream/nope", headers=ALPHA) as ws:
        assert ws.receive_json()["code"] == "resource_not_found"
    with client.websocket_connect(f"/api/speech/stream/{resource_id}") as ws:
        assert ws.receive_json()["code"] == "unauthorized"
    with client.websocket_connect(f"/api/speech/stream/{resource_id}?stream_token=forged.sig") as ws:
        assert ws.receive_json()["code"] == "unauthorized"
    token = client.post("/api/v1/session/stream-token", headers=ALPHA).json()["token"]
    with client.websocket_connect(f"/api/speech/stream/{resource_id}?stream_token={token}") as ws:
        assert ws.receive_json()["type"] == "ready"  # a browser's socket: no headers, a short-lived token
    with client.websocket_connect(f"/api/speech/stream/{resource_id}", headers=BETA) as ws:
        assert ws.receive_json()["code"] == "resource_not_found"  # another tenant's: as if unknown
    with client.websocket_connect(f"/api/speech/stream/{resource_id}", headers=ALPHA) as ws:
        assert ws.receive_json()["type"] == "ready"
        ws.send_text("end")
        assert ws.receive_json() == {
            "type": "error",
            "code": "invalid_params",
            "field": "audio_chunks",
            "message": "no audio received before end",
        }
        ws.send_text("{not json")
        assert ws.receive_json()["message"].startswith("malformed JSON frame")
        ws.send_text(json.dumps({"type": "audio"}))
        assert ws.receive_json()["field"] == "data"
        ws.send_text(json.dumps({"type": "dance"}))
        assert "unknown frame type 'dance'" in ws.receive_json()["message"]
        ws.send_text(json.dumps({"type": "ping"}))
        assert ws.receive_json() == {"type": "pong"}


def test_a_stream_past_the_audio_limit_is_closed_with_a_clear_error(make_app: AppFactory, tmp_path: Path) -> None:
    """More audio than CONVEYOR_SPEECH_MAX_AUDIO_MB: a payload_too_large frame, then the socket closes."""
    app = speech_app(make_app, f"sqlite:///{tmp_path / 's.db'}", workload_settings={"speech": {"max_audio_mb": 0.01}})
    with TestClient(create_app(app, scheduler=False)) as client:
        resource_id = create_resource(client, "hello world", synthesize=False)
        with client.websocket_connect(f"/api/speech/stream/{resource_id}", headers=ALPHA) as ws:
            ws.receive_json()
            for chunk in as_chunks(os.urandom(20_000)):
                ws.send_text(chunk)
            error = ws.receive_json()
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
    assert error["code"] == "payload_too_large"
    assert closed.value.code == 1009


def test_a_reader_who_leaves_mid_task_still_gets_the_attempt_stored(sqlite_speech: tuple[TestClient, Conveyor]) -> None:
    """The socket closes right after ``accepted``; the reading is transcribed and its session closed."""
    client, app = sqlite_speech
    text = "good morning everyone"
    resource_id = create_resource(client, text, synthesize=False)
    with client.websocket_connect(f"/api/speech/stream/{resource_id}", headers=ALPHA) as ws:
        session_id = ws.receive_json()["session_id"]
        for chunk in as_chunks(flite_wav(text)):
            ws.send_text(chunk)
        ws.send_text("end")
        task_id = ws.receive_json()["task_id"]
    record = wait_task(client, task_id)
    assert record["status"] == "SUCCESS"
    assert client.get(f"/api/attempts/{task_id}", headers=ALPHA).json()["transcript"] == text
    from conveyor.workloads.speech import db

    row = db.session(app.engine, session_id)
    assert row is not None
    assert row.status == "closed"
