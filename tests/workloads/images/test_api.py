"""Seed 004's client flow over HTTP: submit, poll /status/, read /result/, cancel, and every refusal.

The seed's own test suite (``test_celery_redis.py``: input validation,
cancellation, the full image generation flow) runs here against the
embedded default (local executor, SQLite) and, in ``test_celery_redis.py``
beside this file, on the Redis-only store with a Celery worker.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

pytest.importorskip("cv2")
pytest.importorskip("dlib")

from conveyor import Conveyor
from conveyor.api.main import create_app
from tests.conftest import AppFactory
from tests.workloads.images import samples

SEED_TYPES = ["image_generation", "face_swap", "background_removal", "object_removal", "style_transfer"]


@pytest.fixture
def client(make_app: AppFactory) -> Iterator[tuple[TestClient, Conveyor]]:
    app = make_app(start=False, workloads=["system", "images"], workload_settings={"images": {"max_image_mb": 2}})
    with TestClient(create_app(app, scheduler=False)) as c:
        yield c, app


def poll(client: TestClient, task_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Poll /status/ as the seed's front end does until the task has finished; every answer seen."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/api/v1/tasks/{task_id}/status/")
        assert r.status_code == 200, r.text
        seen.append(r.json())
        if seen[-1]["status"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            return seen
        assert time.monotonic() < deadline, seen[-1]
        time.sleep(0.05)


def run(client: TestClient, body: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    r = client.post("/api/v1/tasks/submit/", json=body)
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    poll(client, task_id, timeout)
    res = client.get(f"/api/v1/tasks/{task_id}/result/")
    assert res.status_code == 200, res.text
    out: dict[str, Any] = res.json()
    return out


# -- the seed's test suite ------------------------------------------------------------------


def seed_input_validation(client: TestClient) -> None:
    """Missing task_type, invalid task_type (listing the known ones), missing required fields."""
    r = client.post("/api/v1/tasks/submit/", json={"prompt": "beautiful sunset"})
    assert r.status_code in (400, 422)
    assert r.json()["error"]["details"][0]["field"] == "task_type"
    r = client.post("/api/v1/tasks/submit/", json={"task_type": "invalid_type", "prompt": "x"})
    assert r.status_code == 400
    assert {f"images.{t}" for t in SEED_TYPES} <= set(r.json()["error"]["details"]["known_types"])
    for task_type, missing in [
        ("image_generation", "prompt"),
        ("face_swap", "source_image"),
        ("background_removal", "image"),
        ("style_transfer", "image"),
        ("object_removal", "image"),
    ]:
        r = client.post("/api/v1/tasks/submit/", json={"task_type": task_type})
        assert r.status_code == 422, r.text
        assert missing in {d["field"] for d in r.json()["error"]["details"]}, (task_type, r.json())


def seed_cancellation(client: TestClient) -> None:
    """Submit → cancel → verify CANCELLED."""
    r = client.post(
        "/api/v1/tasks/submit/",
        json={
            "task_type": "image_generation",
            "prompt": "slow",
            "parameters": {"width": 2048, "height": 2048, "steps": 150},
        },
    )
    task_id = r.json()["task_id"]
    c = client.post(f"/api/v1/tasks/{task_id}/cancel/")
    assert c.status_code == 200, c.text
    final = poll(client, task_id)[-1]
    assert final["status"] == "CANCELLED"
    assert final["result_available"] is False


def seed_image_generation(client: TestClient) -> None:
    """Submit → poll with progress → result → the base64 decodes to a PNG of the requested size."""
    r = client.post(
        "/api/v1/tasks/submit/",
        json={
            "task_type": "image_generation",
            "prompt": "beautiful sunset",
            "parameters": {"width": 320, "height": 192, "steps": 12},
        },
    )
    assert r.status_code == 202, r.text
    created = r.json()
    assert created["status"] == "PENDING"
    assert created["message"] == "Task submitted"
    seen = poll(client, created["task_id"])
    assert set(seen[-1]) >= {"task_id", "status", "progress", "message", "result_available"}
    assert seen[-1]["status"] == "SUCCESS"
    assert seen[-1]["result_available"] is True
    assert seen[-1]["progress"] == 100
    res = client.get(f"/api/v1/tasks/{created['task_id']}/result/").json()
    assert res["status"] == "SUCCESS"
    assert res["result"]["prompt_used"] == "beautiful sunset"
    assert samples.decode_png(res["result"]["image_data"]).size == (320, 192)
    meta = res["result"]["metadata"]
    assert (meta["width"], meta["height"], meta["generator"]) == (320, 192, "procedural")
    assert "total" in meta["timings"]


def test_the_seed_test_suite_passes_on_the_embedded_default(client: tuple[TestClient, Conveyor]) -> None:
    """Input validation, cancellation, full image generation: seed 004's three tests, local executor."""
    c, _ = client
    seed_input_validation(c)
    seed_cancellation(c)
    seed_image_generation(c)


def test_progress_is_reported_in_steps_that_a_poller_sees(client: tuple[TestClient, Conveyor]) -> None:
    """The timeline of a generation has its steps (the store keeps the latest of each flush), rising to 100."""
    c, _ = client
    r = c.post(
        "/api/v1/tasks/submit/",
        json={
            "task_type": "image_generation",
            "prompt": "ocean",
            "parameters": {"width": 1024, "height": 1024, "steps": 12},
        },
    )
    task_id = r.json()["task_id"]
    seen = poll(c, task_id)
    steps = c.get(f"/api/v1/tasks/{task_id}/timeline").json()["data"]
    progress = [s["progress"] for s in steps if s["status"] == "PROCESSING"]
    assert progress == sorted(progress)
    assert len({p for p in progress if 0 < p < 100}) >= 3, steps
    assert any(s["message"].startswith("Step ") for s in steps)
    assert seen[-1]["progress"] == 100
    assert seen[-1]["message"] == "Completed"


# -- each type end to end ---------------------------------------------------------------------


def test_background_removal_returns_an_rgba_png_whose_alpha_is_the_mask(client: tuple[TestClient, Conveyor]) -> None:
    """A composite's cut-out over HTTP: RGBA PNG, alpha = mask_data, IoU ≥ 0.85."""
    c, _ = client
    img, truth = samples.composite(samples.astronaut(), samples.chelsea(), (300, 450), (225, 150), (100, 110))
    out = run(
        c, {"task_type": "background_removal", "image": "data:image/png;base64," + samples.b64(samples.png_bytes(img))}
    )
    png = samples.decode_png(out["result"]["image_data"])
    assert png.mode == "RGBA"
    alpha = np.asarray(png)[:, :, 3]
    assert (alpha == np.asarray(samples.decode_png(out["result"]["mask_data"]))).all()
    pred = alpha >= 128
    assert (pred & truth).sum() / (pred | truth).sum() >= 0.85
    assert out["result"]["metadata"]["method"] == "border-seeded-grabcut"


def test_object_removal_by_box_and_by_mask_file_on_the_same_route(client: tuple[TestClient, Conveyor]) -> None:
    """JSON with a box, and a multipart form with image and mask files: both restore the wall ≥ 25 dB."""
    c, _ = client
    img = samples.astronaut()
    x, y, w, h = 90, 50, 32, 32
    pasted = img.copy()
    pasted[y : y + h, x : x + w] = (30, 200, 40)
    inside = np.zeros(img.shape[:2], bool)
    inside[y : y + h, x : x + w] = True
    out = run(c, {"task_type": "object_removal", "image": samples.b64(samples.png_bytes(pasted)), "box": [x, y, w, h]})
    restored = np.asarray(samples.decode_png(out["result"]["image_data"]).convert("RGB"))
    assert samples.psnr(restored, img, inside) >= 25
    mask = (inside * 255).astype(np.uint8)
    r = c.post(
        "/api/v1/tasks/submit/",
        data={"task_type": "object_removal", "parameters": '{"method": "ns"}'},
        files={
            "image": ("photo.png", samples.png_bytes(pasted), "image/png"),
            "mask": ("mask.png", samples.png_bytes(np.dstack([mask] * 3)), "image/png"),
        },
    )
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    assert poll(c, task_id)[-1]["status"] == "SUCCESS"
    res = c.get(f"/api/v1/tasks/{task_id}/result/").json()["result"]
    assert res["metadata"]["method"] == "opencv-inpaint-ns"
    restored = np.asarray(samples.decode_png(res["image_data"]).convert("RGB"))
    assert samples.psnr(restored, img, inside) >= 25


def test_style_transfer_by_name_and_by_style_image(client: tuple[TestClient, Conveyor]) -> None:
    """A named style and a style image both return a changed image of the input's size."""
    c, _ = client
    photo = samples.b64(samples.jpeg_bytes(samples.coffee()))
    for extra in ({"style": "cartoon"}, {"style_image": samples.b64(samples.png_bytes(samples.chelsea()))}):
        out = run(c, {"task_type": "style_transfer", "image": photo, **extra})
        png = samples.decode_png(out["result"]["image_data"])
        assert png.size == (600, 400)
        assert np.abs(np.asarray(png.convert("RGB")).astype(int) - samples.coffee()).mean() > 10


def test_face_swap_over_http_and_a_photo_without_a_face_fails_naming_it(client: tuple[TestClient, Conveyor]) -> None:
    """A swap succeeds with the landmarks in its metadata; a cat as target_image is a FAILURE saying so."""
    c, _ = client
    source, _ = samples.marked_face_source()
    out = run(
        c,
        {
            "task_type": "face_swap",
            "source_image": samples.b64(samples.png_bytes(source)),
            "target_image": samples.b64(samples.png_bytes(samples.astronaut())),
        },
    )
    assert len(out["result"]["metadata"]["target_landmarks"]) == 68
    r = c.post(
        "/api/v1/tasks/submit/",
        json={
            "task_type": "face_swap",
            "source_image": samples.b64(samples.png_bytes(source)),
            "target_image": samples.b64(samples.png_bytes(samples.chelsea())),
        },
    )
    task_id = r.json()["task_id"]
    assert poll(c, task_id)[-1]["status"] == "FAILURE"
    res = c.get(f"/api/v1/tasks/{task_id}/result/").json()
    assert res["error"]["message"] == "no face found in target_image"
    # The worker keeps serving after a failure.
    assert (
        run(c, {"task_type": "image_generation", "prompt": "after", "parameters": {"width": 64, "height": 64}})[
            "status"
        ]
        == "SUCCESS"
    )


# -- bad input ---------------------------------------------------------------------------------


def test_bad_images_are_4xx_naming_the_field_and_never_500(client: tuple[TestClient, Conveyor]) -> None:
    """Truncated base64, a non-image, a 20,000² PNG bomb, a wrong-size mask, a box outside: each names its field."""
    c, _ = client
    good = samples.b64(samples.png_bytes(samples.chelsea()))
    small_mask = samples.b64(samples.png_bytes(np.zeros((8, 8, 3), np.uint8)))
    cases = [
        ({"task_type": "background_removal", "image": good[: len(good) // 2 + 1]}, 422, "image"),
        ({"task_type": "background_removal", "image": samples.b64(b"GIF89a? no, plain text")}, 422, "image"),
        ({"task_type": "background_removal", "image": samples.b64(samples.png_bomb())}, 413, "image"),
        ({"task_type": "object_removal", "image": good, "mask": small_mask}, 422, "mask"),
        ({"task_type": "object_removal", "image": good, "box": [400, 250, 100, 100]}, 422, "box"),
        ({"task_type": "object_removal", "image": good}, 422, "mask"),
        ({"task_type": "style_transfer", "image": good, "style": "cubism"}, 422, "style"),
        ({"task_type": "style_transfer", "image": good}, 422, "params"),
        ({"task_type": "image_generation", "prompt": "x", "parameters": {"width": 500}}, 422, "parameters.width"),
        ({"task_type": "image_generation", "prompt": "x", "parameters": {"width": 8192}}, 422, "parameters.width"),
        ({"task_type": "face_swap", "source_image": 12, "target_image": good}, 422, "source_image"),
    ]
    for body, status, field in cases:
        r = c.post("/api/v1/tasks/submit/", json=body)
        assert r.status_code == status, (body.get("task_type"), field, r.text[:300])
        err = r.json()["error"]
        fields = [d["field"] for d in err["details"]] if isinstance(err["details"], list) else [err["details"]["field"]]
        assert field in fields, (field, err)


def test_an_image_over_the_byte_limit_and_a_body_over_the_limit_are_413(make_app: AppFactory) -> None:
    """max_image_mb per field (JSON and multipart), max_body_mb for the whole request."""
    app = make_app(
        start=False,
        workloads=["system", "images"],
        workload_settings={"images": {"max_image_mb": 0.05, "max_body_mb": 0.5}},
    )
    with TestClient(create_app(app, scheduler=False)) as c:
        big = samples.png_bytes(samples.chelsea())  # ~270 KB
        r = c.post("/api/v1/tasks/submit/", json={"task_type": "background_removal", "image": samples.b64(big)})
        assert r.status_code == 413
        assert r.json()["error"]["details"]["field"] == "image"
        r = c.post(
            "/api/v1/tasks/submit/",
            data={"task_type": "background_removal"},
            files={"image": ("a.png", big, "image/png")},
        )
        assert r.status_code == 413
        assert r.json()["error"]["details"]["field"] == "image"
        r = c.post("/api/v1/tasks/submit/", json={"task_type": "background_removal", "image": "A" * 700_000})
        assert r.status_code == 413
        assert r.json()["error"]["details"]["field"] == "body"


def test_a_task_that_fails_on_a_corrupt_image_reports_the_field(client: tuple[TestClient, Conveyor]) -> None:
    """From Python (no HTTP checks) a truncated image or a PNG bomb is a FAILURE naming the field; the pool goes on."""
    _, app = client
    raw = samples.png_bytes(samples.chelsea())
    record = app.manager.submit_task("background_removal", {"image": samples.b64(raw[: len(raw) // 2])})
    done = app.manager.wait(record.id, timeout=30)
    assert done.state.value == "FAILURE"
    assert "image" in done.error["message"]
    assert "truncated" in done.error["message"]
    bomb = app.manager.submit_task("background_removal", {"image": samples.b64(samples.png_bomb())})
    done = app.manager.wait(bomb.id, timeout=30)
    assert done.state.value == "FAILURE"
    assert done.error["message"].startswith("image: ")
    assert "pixels" in done.error["message"]
    after = app.manager.submit_task(
        "image_generation", {"prompt": "still serving", "parameters": {"width": 64, "height": 64}}
    )
    assert app.manager.wait(after.id, timeout=30).state.value == "SUCCESS"


def test_results_expire_after_the_result_ttl_with_a_404(make_app: AppFactory) -> None:
    """result_ttl is 3600 s for every image type; past expires_at the result is a 404 naming the expiry."""
    app = make_app(start=False, workloads=["system", "images"])
    for name in SEED_TYPES:
        assert app.registry.get(name).result_ttl == 3600
    with TestClient(create_app(app, scheduler=False)) as c:
        out = run(c, {"task_type": "image_generation", "prompt": "x", "parameters": {"width": 64, "height": 64}})
        record = app.manager.get(out["task_id"])
        assert record.expires_at is not None
        assert 3590 < record.expires_at - record.finished_at <= 3600
        from conveyor.stores.sql import tasks_table

        # An hour later, as the clock would have it: expires_at moved into the past.
        with app.engine.begin() as conn:
            conn.execute(tasks_table.update().where(tasks_table.c.id == record.id).values(expires_at=time.time() - 1))
        r = c.get(f"/api/v1/tasks/{record.id}/result/")
        assert r.status_code == 404
        assert "expired" in r.json()["error"]["message"]


def test_queues_follow_the_configuration(make_app: AppFactory) -> None:
    """Without GPU workers every type runs on cpu; with them the heavy ones go to gpu, as each record shows."""
    for gpu, heavy_queue in ((False, "cpu"), (True, "gpu")):
        app = make_app(start=False, workloads=["system", "images"], workload_settings={"images": {"gpu_workers": gpu}})
        with TestClient(create_app(app, scheduler=False)) as c:
            r = c.post(
                "/api/v1/tasks/submit/",
                json={"task_type": "image_generation", "prompt": "q", "parameters": {"width": 64, "height": 64}},
            )
            assert r.json()["queue"] == heavy_queue
            box = {
                "task_type": "object_removal",
                "image": samples.b64(samples.png_bytes(samples.chelsea())),
                "box": [0, 0, 5, 5],
            }
            assert c.post("/api/v1/tasks/submit/", json=box).json()["queue"] == "cpu"
            assert c.get("/api/v1/images").json()["task_types"]["face_swap"]["queue"] == heavy_queue


def test_the_generator_is_chosen_by_configuration_and_a_missing_backend_says_what_to_install(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """GENERATOR=diffusers without a model folder, or without the extra, is a FAILURE that says which."""
    pytest.importorskip("cv2")
    cases = [
        ({"generator": "diffusers"}, "CONVEYOR_IMAGES_DIFFUSERS_MODEL_DIR"),
        ({"generator": "diffusers", "diffusers_model_dir": str(tmp_path)}, "conveyor[images-diffusers]"),
    ]
    for settings, says in cases:
        if "model_dir" in str(settings) and importlib.util.find_spec("diffusers") is not None:
            continue  # with the extra installed the folder would be loaded, not refused
        app = make_app(start=False, workloads=["system", "images"], workload_settings={"images": settings})
        with TestClient(create_app(app, scheduler=False)) as c:
            r = c.post("/api/v1/tasks/submit/", json={"task_type": "image_generation", "prompt": "p"})
            task_id = r.json()["task_id"]
            assert poll(c, task_id)[-1]["status"] == "FAILURE"
            assert says in c.get(f"/api/v1/tasks/{task_id}/result/").json()["error"]["message"]


def test_a_running_task_stops_at_its_next_step_when_cancelled(client: tuple[TestClient, Conveyor]) -> None:
    """Cancelled while PROCESSING (past its first steps), a generation ends CANCELLED before 100 %, with no result."""
    c, _ = client
    r = c.post(
        "/api/v1/tasks/submit/",
        json={
            "task_type": "image_generation",
            "prompt": "long",
            "parameters": {"width": 2048, "height": 2048, "steps": 150},
        },
    )
    task_id = r.json()["task_id"]
    deadline = time.monotonic() + 60
    while True:
        s = c.get(f"/api/v1/tasks/{task_id}/status/").json()
        if s["status"] == "PROCESSING" and s["message"].startswith("Step "):
            break
        assert s["status"] in ("PENDING", "PROCESSING"), s
        assert time.monotonic() < deadline, s
        time.sleep(0.05)
    assert c.post(f"/api/v1/tasks/{task_id}/cancel/").status_code == 200
    final = poll(c, task_id)[-1]
    assert final["status"] == "CANCELLED"
    assert final["progress"] < 100
    assert c.get(f"/api/v1/tasks/{task_id}/result/").json()["result"] is None
