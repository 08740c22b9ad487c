"""Seed 000's correction flow over HTTP with the local executor: submit, poll, download, and every refusal."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("cv2", reason="the media extra is not installed: pip install 'conveyor[media]'")

from fastapi.testclient import TestClient

from conveyor import Conveyor
from conveyor.api.main import create_app
from conveyor.workloads.media.storage import tenant_root
from tests.conftest import AppFactory
from tests.workloads.media import samples

ALPHA = {"Authorization": "Bearer ka"}
BETA = {"Authorization": "Bearer kb"}
RECORD_KEYS = {
    "task_id", "media_type", "input", "output_folder", "options", "status", "progress", "message", "result",
    "error_message", "created_at", "started_at", "completed_at", "updated_at",
}  # fmt: skip


@pytest.fixture
def corr(make_app: AppFactory, sql_database_url: str) -> Iterator[tuple[TestClient, Conveyor]]:
    app = make_app(
        start=False,
        database_url=sql_database_url,
        api_keys="ka=alpha,kb=beta",
        workloads=["system", "media"],
        workload_settings={"media": {"max_upload_mb": 2, "max_audio_seconds": 30, "max_image_megapixels": 4}},
    )
    with TestClient(create_app(app, scheduler=False)) as client:
        yield client, app


def submit(client: TestClient, path: Path, headers: dict[str, str] = ALPHA, **fields: Any) -> Any:
    data = {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in fields.items()}
    with open(path, "rb") as f:
        return client.post("/corr/tasks/", files={"file": (path.name, f.read())}, data=data, headers=headers)


def poll(client: TestClient, task_id: str, headers: dict[str, str] = ALPHA, timeout: float = 90) -> dict[str, Any]:
    """Poll GET /corr/tasks/<task_id>/ as the seed's front end does, until the record is final."""
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(f"/corr/tasks/{task_id}/", headers=headers)
        assert answer.status_code == 200, answer.text
        record: dict[str, Any] = answer.json()
        if record["status"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.1)


def test_an_uploaded_noisy_recording_is_corrected_and_downloaded(
    corr: tuple[TestClient, Conveyor], tmp_path: Path
) -> None:
    """The seed's flow: submit -> 202 with task_id -> poll -> SUCCESS naming the output -> download it, on target."""
    client, _ = corr
    src = samples.noisy_quiet_speech(tmp_path / "interview.wav")
    answer = submit(client, src)
    assert answer.status_code == 202, answer.text
    created = answer.json()
    assert created["status"] == "PENDING"
    assert created["media_type"] == "audio"
    record = poll(client, created["task_id"])
    assert set(record) >= RECORD_KEYS
    assert record["status"] == "SUCCESS", record["error_message"]
    assert record["progress"] == 100
    assert record["error_message"] is None
    (output,) = record["result"]["outputs"]
    assert output["name"] == "interview_corrected.wav"
    assert output["media_type"] == "audio"
    assert output["url"] == f"/corr/tasks/{created['task_id']}/output/interview_corrected.wav"
    download = client.get(output["url"], headers=ALPHA)
    assert download.status_code == 200
    assert len(download.content) == output["size_bytes"]
    got = tmp_path / "got.wav"
    got.write_bytes(download.content)
    meter = samples.ebur128(got)
    assert abs(meter["I"] + 16.0) <= 0.5
    assert meter["TP"] <= -1.0
    measured = record["result"]["measurements"]
    assert measured["before"]["integrated_lufs"] == pytest.approx(-35, abs=0.5)
    assert measured["after"]["noise_floor_dbfs"] < measured["before"]["noise_floor_dbfs"]


def test_an_image_is_detected_from_content_and_corrected(corr: tuple[TestClient, Conveyor], tmp_path: Path) -> None:
    """No media_type sent: the JPEG bytes say image; the result reports the cast before and after."""
    client, _ = corr
    src = tmp_path / "holiday.bin"  # the name says nothing: the content decides
    samples.cast_and_rotated_jpeg(src)
    answer = submit(client, src, options={"format": "png"})
    assert answer.status_code == 202, answer.text
    assert answer.json()["media_type"] == "image"
    record = poll(client, answer.json()["task_id"])
    assert record["status"] == "SUCCESS", record["error_message"]
    measured = record["result"]["measurements"]
    assert measured["after"]["colour_cast"] < measured["before"]["colour_cast"] * 0.5
    assert measured["after"]["contrast"] >= measured["before"]["contrast"] - 0.5
    assert record["result"]["outputs"][0]["name"].endswith(".png")


def test_a_video_is_corrected_through_the_api(corr: tuple[TestClient, Conveyor], tmp_path: Path) -> None:
    """A quiet 1 s clip comes back as an MP4 on target loudness with its duration kept."""
    client, _ = corr
    src = samples.quiet_clip(tmp_path / "clip.mp4")
    record = poll(client, submit(client, src, media_type="video").json()["task_id"])
    assert record["status"] == "SUCCESS", record["error_message"]
    (output,) = record["result"]["outputs"]
    got = tmp_path / "got.mp4"
    got.write_bytes(client.get(output["url"], headers=ALPHA).content)
    assert abs(samples.ebur128(got)["I"] + 16.0) <= 1.0
    assert abs(samples.probe_duration(got) - 1.0) <= 0.1


def test_a_path_in_the_tenants_storage_is_corrected_into_the_named_folder(
    corr: tuple[TestClient, Conveyor], tmp_path: Path
) -> None:
    """JSON with input and output_folder relative to the tenant's storage, as the seed's worker paths are."""
    client, app = corr
    root = tenant_root(app.settings.data_dir, "alpha")
    (root / "library").mkdir(parents=True)
    samples.noisy_quiet_speech(root / "library" / "take1.wav")
    answer = client.post(
        "/corr/tasks/",
        json={"input": "library/take1.wav", "media_type": "audio", "output_folder": "fixed", "options": {}},
        headers=ALPHA,
    )
    assert answer.status_code == 202, answer.text
    record = poll(client, answer.json()["task_id"])
    assert record["status"] == "SUCCESS", record["error_message"]
    assert (root / "fixed" / "take1_corrected.wav").is_file()
    assert not list((root / "fixed").glob(".partial-*"))


def test_listing_filters_by_status_and_media_type_and_pages(corr: tuple[TestClient, Conveyor], tmp_path: Path) -> None:
    """The tenant's corrections, newest first, filtered and paged; another tenant sees none of them."""
    client, _ = corr
    photo = tmp_path / "p.jpg"
    samples.cast_and_rotated_jpeg(photo)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x07" * 64)
    ids = [submit(client, photo).json()["task_id"], submit(client, bad).json()["task_id"]]
    for task_id in ids:
        poll(client, task_id)
    everything = client.get("/corr/tasks/", headers=ALPHA).json()
    assert everything["count"] == 2
    assert [r["task_id"] for r in everything["data"]] == ids[::-1]
    images = client.get("/corr/tasks/?media_type=image&status=SUCCESS", headers=ALPHA).json()
    assert [r["task_id"] for r in images["data"]] == ids[:1]
    failed = client.get("/corr/tasks/", params={"status": "FAILURE"}, headers=ALPHA).json()
    assert [r["task_id"] for r in failed["data"]] == ids[1:]
    page = client.get("/corr/tasks/?limit=1&offset=1", headers=ALPHA).json()
    assert page["count"] == 2
    assert [r["task_id"] for r in page["data"]] == ids[:1]
    assert client.get("/corr/tasks/", headers=BETA).json()["count"] == 0
    assert client.get(f"/corr/tasks/{ids[0]}/", headers=BETA).status_code == 404
    assert client.get(f"/corr/tasks/{ids[0]}/output/p_corrected.jpg", headers=BETA).status_code == 404
    assert client.get("/corr/tasks/?status=DONE", headers=ALPHA).status_code == 422


def test_a_corrupt_file_ends_in_failure_naming_the_decoder_error(
    corr: tuple[TestClient, Conveyor], tmp_path: Path
) -> None:
    """A WAV header over garbage is accepted by type, then fails with the decoder's words in error_message."""
    client, _ = corr
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x07" * 64)
    answer = submit(client, bad)
    assert answer.status_code == 202
    record = poll(client, answer.json()["task_id"])
    assert record["status"] == "FAILURE"
    assert "decod" in record["error_message"]
    assert record["result"] is None


def test_a_missing_input_is_a_failure_that_names_file_access(corr: tuple[TestClient, Conveyor]) -> None:
    """A path that is not in the storage (a volume not mounted) fails naming the path, as in the seed's FAQ."""
    client, _ = corr
    answer = client.post("/corr/tasks/", json={"input": "nowhere/gone.mp3", "media_type": "audio"}, headers=ALPHA)
    assert answer.status_code == 202, answer.text
    record = poll(client, answer.json()["task_id"])
    assert record["status"] == "FAILURE"
    assert "File access issues" in record["error_message"]
    assert "nowhere/gone.mp3" in record["error_message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": "../../etc/passwd", "media_type": "audio"}, "input"),
        ({"input": "/etc/passwd", "media_type": "audio"}, "input"),
        ({"input": "a.wav", "media_type": "audio", "output_folder": "../other-tenant"}, "output_folder"),
    ],
)
def test_a_path_outside_the_tenants_storage_is_a_400(
    corr: tuple[TestClient, Conveyor], body: dict[str, Any], field: str
) -> None:
    """.., absolute paths elsewhere and output folders that climb out are refused before anything runs."""
    client, _ = corr
    answer = client.post("/corr/tasks/", json=body, headers=ALPHA)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "path_outside_storage"
    assert error["details"]["field"] == field


def test_a_symlink_out_of_the_storage_is_a_400(corr: tuple[TestClient, Conveyor], tmp_path: Path) -> None:
    """A link inside the folder that points outside it does not open a way out."""
    client, app = corr
    root = tenant_root(app.settings.data_dir, "alpha")
    root.mkdir(parents=True)
    secret = tmp_path / "secret.wav"
    samples.noisy_quiet_speech(secret)
    (root / "link.wav").symlink_to(secret)
    answer = client.post("/corr/tasks/", json={"input": "link.wav"}, headers=ALPHA)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "path_outside_storage"


def test_unsupported_or_undetectable_media_is_a_415(corr: tuple[TestClient, Conveyor], tmp_path: Path) -> None:
    """A PDF, random bytes and an empty file are refused with 415 naming the field; nothing is stored."""
    client, app = corr
    for name, content in [("doc.pdf", b"%PDF-1.7\n" + b"x" * 100), ("noise.wav", b"\x13\x37" * 300), ("e.wav", b"")]:
        path = tmp_path / name
        path.write_bytes(content)
        answer = submit(client, path)
        assert answer.status_code == 415, answer.text
        assert answer.json()["error"]["details"]["field"] == "file"
    assert client.get("/corr/tasks/", headers=ALPHA).json()["count"] == 0
    uploads = tenant_root(app.settings.data_dir, "alpha") / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


def test_a_media_type_that_contradicts_the_content_is_a_415(corr: tuple[TestClient, Conveyor], tmp_path: Path) -> None:
    """A photo sent as video is refused naming media_type."""
    client, _ = corr
    photo = tmp_path / "p.jpg"
    samples.cast_and_rotated_jpeg(photo)
    answer = submit(client, photo, media_type="video")
    assert answer.status_code == 415
    assert answer.json()["error"]["details"]["field"] == "media_type"


def test_bad_media_type_and_options_are_422s_naming_the_field(
    corr: tuple[TestClient, Conveyor], tmp_path: Path
) -> None:
    """media_type outside the three, options that are not JSON, and an out-of-range option each name their field."""
    client, _ = corr
    src = samples.noisy_quiet_speech(tmp_path / "a.wav")
    cases = [
        ({"media_type": "podcast"}, "media_type"),
        ({"options": "{not json"}, "options"),
        ({"options": {"target_lufs": 3}}, "options.target_lufs"),
        ({"options": {"warp": True}}, "options.warp"),
    ]
    for fields, field in cases:
        answer = submit(client, src, **fields)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["details"][0]["field"] == field
    no_file = client.post("/corr/tasks/", data={"media_type": "audio"}, files={"other": ("x", b"1")}, headers=ALPHA)
    assert no_file.status_code == 422
    assert no_file.json()["error"]["details"][0]["field"] == "file"
    no_input = client.post("/corr/tasks/", json={"media_type": "audio"}, headers=ALPHA)
    assert no_input.status_code == 422
    assert no_input.json()["error"]["details"][0]["field"] == "input"
    assert (
        client.post("/corr/tasks/", content=b"[1]", headers={**ALPHA, "content-type": "application/json"}).status_code
        == 422
    )
    assert (
        client.post("/corr/tasks/", content=b"plain", headers={**ALPHA, "content-type": "text/plain"}).status_code
        == 415
    )


def test_an_upload_over_the_limit_is_a_413_and_leaves_nothing(
    corr: tuple[TestClient, Conveyor], tmp_path: Path
) -> None:
    """3 MB against a 2 MB limit: 413 naming the limit, no record, no file."""
    client, app = corr
    big = tmp_path / "big.wav"
    big.write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + b"\x00" * 3 * 1024 * 1024)
    answer = submit(client, big)
    assert answer.status_code == 413
    assert answer.json()["error"]["details"]["field"] == "file"
    assert client.get("/corr/tasks/", headers=ALPHA).json()["count"] == 0
    uploads = tenant_root(app.settings.data_dir, "alpha") / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


def ten_hour_wav(path: Path) -> Path:
    """A real ten-hour 8 kHz WAV of silence, as a sparse file: 576 MB long, almost nothing on disk."""
    import struct

    rate, seconds = 8000, 36000
    data_bytes = rate * 2 * seconds
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", data_bytes)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + data_bytes)
    return path


def test_a_chunked_upload_over_the_servers_body_limit_is_a_413(make_app: AppFactory, tmp_path: Path) -> None:
    """No Content-Length to refuse early: the server's limit is met while the body streams, and the answer is 413."""
    app = make_app(
        start=False, database_url=f"sqlite:///{tmp_path / 'c.db'}", max_body_mb=0.01, workloads=["system", "media"]
    )
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n' + b"\0" * 50_000
    body += b"\r\n--b--\r\n"

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    with TestClient(create_app(app, scheduler=False)) as client:
        multipart = {"content-type": "multipart/form-data; boundary=b"}
        answer = client.post("/corr/tasks/", content=chunks(), headers=multipart)
        assert answer.status_code == 413, answer.text
        assert client.get("/corr/tasks/").json()["count"] == 0


def test_ten_hours_of_audio_is_a_413_read_from_the_header(corr: tuple[TestClient, Conveyor]) -> None:
    """A ten-hour WAV in the tenant's storage is refused by its duration before anything decodes it."""
    client, app = corr
    ten_hour_wav(tenant_root(app.settings.data_dir, "alpha") / "long.wav")
    answer = client.post("/corr/tasks/", json={"input": "long.wav"}, headers=ALPHA)
    assert answer.status_code == 413, answer.text
    assert "lasts 36000 s; the limit is 30 s" in answer.json()["error"]["message"]
    assert client.get("/corr/tasks/", headers=ALPHA).json()["count"] == 0


def test_a_decompression_bomb_is_a_413(corr: tuple[TestClient, Conveyor], tmp_path: Path) -> None:
    """A tiny PNG declaring 900 megapixels is refused from its header; a 6 MP one is over this server's 4 MP limit."""
    from PIL import Image

    client, _ = corr
    bomb = tmp_path / "bomb.png"
    samples.png_bomb(bomb)
    assert submit(client, bomb).status_code == 413
    wide = tmp_path / "wide.png"
    Image.new("L", (3000, 2000)).save(wide, optimize=True)
    answer = submit(client, wide)
    assert answer.status_code == 413
    assert "megapixels" in answer.json()["error"]["message"]


def test_cancel_and_delete_answer_as_the_seed_expects(corr: tuple[TestClient, Conveyor], tmp_path: Path) -> None:
    """Cancel of a finished correction is a 409; delete removes the record and its files; unknown ids are 404."""
    client, app = corr
    photo = tmp_path / "p.jpg"
    samples.cast_and_rotated_jpeg(photo)
    task_id = submit(client, photo).json()["task_id"]
    record = poll(client, task_id)
    assert record["status"] == "SUCCESS"
    assert client.post(f"/corr/tasks/{task_id}/cancel/", headers=ALPHA).status_code == 409
    root = tenant_root(app.settings.data_dir, "alpha")
    assert (root / record["output_folder"] / "p_corrected.jpg").is_file()
    assert client.delete(f"/corr/tasks/{task_id}/", headers=BETA).status_code == 404
    assert client.delete(f"/corr/tasks/{task_id}/", headers=ALPHA).status_code == 204
    assert client.get(f"/corr/tasks/{task_id}/", headers=ALPHA).status_code == 404
    assert not (root / record["output_folder"]).exists()
    assert not (root / "uploads" / task_id).exists()
    for verb, url in [
        ("get", "/corr/tasks/nope/"),
        ("post", "/corr/tasks/nope/cancel/"),
        ("delete", "/corr/tasks/nope/"),
    ]:
        answer = client.request(verb.upper(), url, headers=ALPHA)
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "correction_not_found"
    assert client.get(f"/corr/tasks/{task_id}/output/../../secret", headers=ALPHA).status_code == 404


def test_ten_hours_submitted_from_python_fail_within_limits(corr: tuple[TestClient, Conveyor]) -> None:
    """Past the route (the seed's positional submit by its alias), the task refuses the ten hours itself, quickly."""
    client, app = corr
    ten_hour_wav(tenant_root(app.settings.data_dir, "alpha") / "long.wav")
    started = time.monotonic()
    app.manager.submit("process_correction", "long-one", "audio", "long.wav", None, {}, tenant="alpha")
    record = poll(client, "long-one")
    assert record["status"] == "FAILURE"
    assert "lasts 36000 s; the limit is 30 s" in record["error_message"]
    assert time.monotonic() - started < 30


def test_a_correction_submitted_from_python_is_pending_before_its_task_starts(
    corr: tuple[TestClient, Conveyor],
) -> None:
    """The task writes the correction's row when it starts; a look before that writes it from the queued task."""
    client, app = corr
    samples.noisy_quiet_speech(tenant_root(app.settings.data_dir, "alpha") / "later.wav")
    app.manager.submit("process_correction", "later-one", "audio", "later.wav", None, {}, tenant="alpha", delay=600)
    answer = client.get("/corr/tasks/later-one/", headers=ALPHA)
    assert answer.status_code == 200, answer.text
    record = answer.json()
    assert set(record) >= RECORD_KEYS
    assert (record["status"], record["input"], record["output_folder"]) == ("PENDING", "later.wav", "outputs/later-one")
    assert client.get("/corr/tasks/later-one/", headers=BETA).status_code == 404
    cancelled = client.post("/corr/tasks/later-one/cancel/", headers=ALPHA)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELLED"
    assert client.get("/corr/tasks/later-one/", headers=ALPHA).json()["status"] == "CANCELLED"
    assert client.post("/corr/tasks/later-one/cancel/", headers=ALPHA).status_code == 409
    assert [c["task_id"] for c in client.get("/corr/tasks/", headers=ALPHA).json()["data"]] == ["later-one"]
    assert client.delete("/corr/tasks/later-one/", headers=ALPHA).status_code == 204
    assert client.get("/corr/tasks/later-one/", headers=ALPHA).status_code == 404


def test_a_correction_id_of_another_tenant_is_not_taken_over(corr: tuple[TestClient, Conveyor], tmp_path: Path) -> None:
    """A Python submit reusing another tenant's correction id fails and leaves that record alone."""
    client, app = corr
    photo = tmp_path / "p.jpg"
    samples.cast_and_rotated_jpeg(photo)
    task_id = submit(client, photo).json()["task_id"]
    assert poll(client, task_id)["status"] == "SUCCESS"
    job = app.manager.submit("process_correction", task_id, "image", "x.jpg", tenant="beta")
    assert app.manager.wait(job, timeout=60).state.value == "FAILURE"
    record = client.get(f"/corr/tasks/{task_id}/", headers=ALPHA).json()
    assert record["status"] == "SUCCESS"
    assert record["result"]["outputs"]


def test_a_cancelled_correction_leaves_no_partial_output(corr: tuple[TestClient, Conveyor], tmp_path: Path) -> None:
    """Cancelled while it runs: the record ends CANCELLED and the output folder holds nothing, hidden or not."""
    import soundfile as sf

    client, app = corr
    rate = 48000
    rng = np.random.default_rng(5)
    t = np.arange(rate * 25, dtype=np.float32) / rate
    tone = 0.05 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)
    long = (tone + 0.003 * rng.standard_normal(t.shape)).astype(np.float32)
    src = tmp_path / "long.flac"
    sf.write(str(src), np.stack([long, long], axis=1), rate)
    task_id = submit(client, src).json()["task_id"]
    deadline = time.monotonic() + 60
    while client.get(f"/corr/tasks/{task_id}/", headers=ALPHA).json()["status"] != "PROCESSING":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    answer = client.post(f"/corr/tasks/{task_id}/cancel/", headers=ALPHA)
    assert answer.status_code == 200, answer.text
    record = poll(client, task_id)
    assert record["status"] == "CANCELLED"
    assert record["result"] is None
    assert record["error_message"] == "the correction was cancelled"
    folder = tenant_root(app.settings.data_dir, "alpha") / record["output_folder"]
    assert not folder.exists() or not any(folder.rglob("*"))


def test_a_python_caller_cannot_name_a_correction_after_a_folder_outside_its_own(
    corr: tuple[TestClient, Conveyor],
) -> None:
    """A task_id of ".." (or one with a slash) is refused by the params model before anything runs."""
    from conveyor.errors import InvalidParams

    _, app = corr
    for bad in ("..", ".hidden", "a/b", ""):
        with pytest.raises(InvalidParams) as caught:
            app.manager.submit("process_correction", bad, "audio", "x.wav", tenant="alpha")
        assert caught.value.details[0]["field"] == "task_id"
