"""Images workload speed and memory: seconds per megapixel of each task type through
Conveyor, beside the same OpenCV / Pillow / dlib calls made directly, as ratios.

    python -m bench.images [--sizes 512,1024,2048] [--repeat 3]

For each type and square size:

* **direct**: the library calls the task's method is built on, in this process,
  with nothing around them: Pillow decodes the PNG, then
  background removal: ``cv2.grabCut`` (5 iterations, rectangle seed) at the
  640-px working size; object removal: ``cv2.inpaint`` (Telea, radius 5) on a
  box of 4 % of the image; style transfer: ``cv2.stylization`` (the watercolor
  style); face swap: dlib's detector and 68-point predictor on both images and
  ``cv2.seamlessClone``; then Pillow encodes a PNG. Image generation has no
  library peer (it is procedural): its row shows Conveyor's figure only.
* **conveyor**: the task submitted with base64 images to a started Conveyor
  (local executor, worker processes, SQLite store) and waited for; the time
  from submit to SUCCESS, so it includes base64, the record's params and
  result in the store, our own pipeline's extra stages (k-means seeding,
  refinement, colour matching, triangle warps) and the PNG of the result.

Peak worker memory is the largest resident set of the local worker processes
(sampled every 20 ms with psutil) while the type's runs are going. Figures are
medians of ``--repeat`` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil
from PIL import Image

from bench.measure import PeakRss

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.workloads.images import samples  # noqa: E402


def photo(side: int) -> np.ndarray:
    """The astronaut (a face, a subject on a backdrop) at ``side`` × ``side``."""
    return np.asarray(cv2.resize(samples.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC), dtype=np.uint8)


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _decode(raw: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def _box(side: int) -> list[int]:
    s = max(8, side // 5)
    return [side // 8, side // 12, s, s]


def direct_calls(side: int) -> dict[str, Callable[[], None]]:
    img = photo(side)
    raw = _png(img)
    face_src, _ = samples.marked_face_source()
    face_raw = _png(face_src)

    def background() -> None:
        rgb = _decode(raw)
        scale = 640 / max(rgb.shape[:2])
        small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        mask = np.zeros(small.shape[:2], np.uint8)
        h, w = mask.shape
        bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
        cv2.grabCut(small, mask, (w // 20, h // 20, w * 9 // 10, h * 9 // 10), bgd, fgd, 5, cv2.GC_INIT_WITH_RECT)
        alpha = cv2.resize(np.where(mask % 2 == 1, 255, 0).astype(np.uint8), (rgb.shape[1], rgb.shape[0]))
        _png(np.dstack([rgb, alpha]))

    def objects() -> None:
        rgb = _decode(raw)
        x, y, s, _ = _box(side)
        m = np.zeros(rgb.shape[:2], np.uint8)
        m[y : y + s, x : x + s] = 255
        _png(cv2.inpaint(rgb, m, 5, cv2.INPAINT_TELEA))

    def style() -> None:
        _png(cv2.stylization(_decode(raw), sigma_s=60, sigma_r=0.45))

    import dlib
    import face_recognition_models

    # Loaded once, as the workload's worker keeps them: the runs time the calls, not the 95 MB load.
    det = dlib.get_frontal_face_detector()
    pred = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())

    def faces() -> None:
        src, dst = _decode(face_raw), _decode(raw)
        pts = []
        for im in (src, dst):
            r = det(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), 1 if max(im.shape) <= 1200 else 0)[0]
            s = pred(im, r)
            pts.append(np.array([(s.part(i).x, s.part(i).y) for i in range(68)], np.int32))
        hull = cv2.convexHull(pts[1])
        m = np.zeros(dst.shape[:2], np.uint8)
        cv2.fillConvexPoly(m, hull, 255)
        x, y, w, h = cv2.boundingRect(hull)
        _png(cv2.seamlessClone(dst, dst, m, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE))

    return {"background_removal": background, "object_removal": objects, "style_transfer": style, "face_swap": faces}


def bodies(side: int) -> dict[str, dict[str, Any]]:
    img = base64.b64encode(_png(photo(side))).decode()
    face_src, _ = samples.marked_face_source()
    return {
        "image_generation": {"prompt": "beautiful sunset", "parameters": {"width": side, "height": side, "seed": 1}},
        "background_removal": {"image": img},
        "object_removal": {"image": img, "box": _box(side)},
        "style_transfer": {"image": img, "style": "watercolor"},
        "face_swap": {"source_image": base64.b64encode(_png(face_src)).decode(), "target_image": img},
    }


def timed(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up: models loaded, caches filled
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="512,1024,2048")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from conveyor import Conveyor
    from conveyor.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            workloads=["system", "images"],
            concurrency=1,  # one worker: its peak memory is one task's
            max_body_mb=200,
        )
        app = Conveyor(settings).start()
        try:
            print(f"# images  sizes={sizes}  repeat={args.repeat}  cores={psutil.cpu_count()}")
            print(f"{'type':<20}{'side':>6}{'MP':>6}{'conveyor s/MP':>15}{'direct s/MP':>13}{'ratio':>8}{'peak MB':>9}")
            for task_type in (
                "image_generation",
                "background_removal",
                "object_removal",
                "style_transfer",
                "face_swap",
            ):
                for side in sizes:
                    mp = side * side / 1e6
                    body = bodies(side)[task_type]

                    def through_conveyor(body: dict[str, Any] = body, task_type: str = task_type) -> None:
                        record = app.manager.submit_task(task_type, body)
                        done = app.manager.wait(record.id, timeout=600)
                        if done.state.value != "SUCCESS":
                            raise RuntimeError(f"{task_type}: {done.state} {done.error}")

                    with PeakRss() as rss:
                        conveyor_s = timed(through_conveyor, args.repeat)
                    direct = direct_calls(side).get(task_type)
                    direct_s = timed(direct, args.repeat) if direct else None
                    ratio = f"{conveyor_s / direct_s:7.2f}×" if direct_s else "    n/a"
                    direct_txt = f"{direct_s / mp:13.3f}" if direct_s else f"{'n/a':>13}"
                    print(
                        f"{task_type:<20}{side:>6}{mp:>6.2f}{conveyor_s / mp:>15.3f}{direct_txt}{ratio}"
                        f"{rss.peak / 2**20:>9.0f}",
                        flush=True,
                    )
            print("# ratio: Conveyor's seconds ÷ the direct library calls' (above 1: the pipeline costs more)")
        finally:
            app.stop()


if __name__ == "__main__":
    main()
