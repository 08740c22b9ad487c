"""Face swap: dlib's 68 landmarks, Delaunay triangles warped one by one, Poisson blending.

The landmark model is ``shape_predictor_68_face_landmarks.dat`` shipped inside
the ``face_recognition_models`` package (installed with the ``images`` extra),
and faces are found with dlib's HOG detector; nothing is downloaded.

1. find the most confident face in each image and its 68 landmarks;
2. triangulate the target's landmarks (Delaunay), and warp each triangle of
   the source face onto its target triangle with an affine map;
3. match the warped face's colours to the target skin (Lab mean and spread
   inside the face hull);
4. blend it in with OpenCV's ``seamlessClone`` under the target's convex
   hull, so no pixel outside the (slightly grown) hull changes.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from conveyor.workloads.images.errors import NoFaceFound
from conveyor.workloads.images.steps import Step, no_steps

#: pixel arrays as OpenCV hands them back (its stubs type every result loosely)
Img = NDArray[Any]

__all__ = ["METHOD", "find_landmarks", "landmark_model_path", "swap_faces"]

METHOD = "dlib-68-landmarks+delaunay-warp+seamless-clone"
RGB = Img
_lock = threading.Lock()


def landmark_model_path() -> str:
    import face_recognition_models

    return str(face_recognition_models.pose_predictor_model_location())


@functools.cache
def _models() -> tuple[Any, Any]:
    """dlib's detector and predictor, loaded once per process (the .dat file is 95 MB)."""
    import dlib

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(landmark_model_path())


def find_landmarks(rgb: RGB, field: str, *, upsample: int | None = None) -> Img:
    """The 68 (x, y) landmarks of the most confident face; NoFaceFound names the field."""
    import dlib

    detector, predictor = _models()
    h, w = rgb.shape[:2]
    # Small faces need upsampling for HOG; large photos do not, and upsampling them is slow.
    if upsample is None:
        upsample = 1 if max(h, w) <= 1200 else 0
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    with _lock:  # dlib's objects are not documented as thread-safe
        rects, scores, _ = detector.run(gray, upsample, 0.0)
        if not rects:
            raise NoFaceFound(f"no face found in {field}")
        best = max(range(len(rects)), key=lambda i: scores[i])
        shape = predictor(gray, rects[best])
    pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.float32)
    pts[:, 0] = np.clip(pts[:, 0], 0, w - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, h - 1)
    del dlib
    return pts


def _triangles(points: Img, w: int, h: int) -> list[tuple[int, int, int]]:
    subdiv = cv2.Subdiv2D((0, 0, w, h))
    index = {}
    for i, (x, y) in enumerate(points):
        key = (float(x), float(y))
        if key not in index:
            index[key] = i
            subdiv.insert(key)
    tris = []
    lookup = dict(index.items())
    for t in subdiv.getTriangleList():
        corners = [(float(t[0]), float(t[1])), (float(t[2]), float(t[3])), (float(t[4]), float(t[5]))]
        ids = [lookup.get(c) for c in corners]
        if all(i is not None for i in ids):
            tris.append((int(ids[0]), int(ids[1]), int(ids[2])))  # type: ignore[arg-type]
    return tris


def _warp_triangle(src: RGB, dst: Img, t_src: Img, t_dst: Img) -> None:
    x, y, bw, bh = cv2.boundingRect(t_dst.astype(np.float32))
    sx, sy, sw, sh = cv2.boundingRect(t_src.astype(np.float32))
    if bw <= 0 or bh <= 0 or sw <= 0 or sh <= 0:
        return
    src_crop = src[sy : sy + sh, sx : sx + sw]
    m = cv2.getAffineTransform((t_src - [sx, sy]).astype(np.float32), (t_dst - [x, y]).astype(np.float32))
    warped = cv2.warpAffine(src_crop, m, (bw, bh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101).astype(
        np.float32
    )
    mask = np.zeros((bh, bw), np.float32)
    cv2.fillConvexPoly(mask, np.round(t_dst - [x, y]).astype(np.int32), 1.0, cv2.LINE_AA)
    roi = dst[y : y + bh, x : x + bw]
    hh, ww = roi.shape[:2]
    mk = mask[:hh, :ww, None]
    roi[:] = roi * (1 - mk) + warped[:hh, :ww] * mk


def _match_colours(face: RGB, target: RGB, mask: Img) -> RGB:
    sel = mask > 0
    a = cv2.cvtColor(face, cv2.COLOR_RGB2LAB).astype(np.float32)
    b = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    mu_a, sd_a = a[sel].mean(0), a[sel].std(0) + 1e-3
    mu_b, sd_b = b[sel].mean(0), b[sel].std(0) + 1e-3
    out = (a - mu_a) * (sd_b / sd_a) + mu_b
    return np.asarray(cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB), dtype=np.uint8)


def swap_faces(source: RGB, target: RGB, *, step: Step = no_steps) -> tuple[RGB, dict[str, Any]]:
    """``target`` with the face of ``source`` on its face; raises NoFaceFound naming the image."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    src_pts = find_landmarks(source, "source_image")
    step(25, "Found the source face")
    dst_pts = find_landmarks(target, "target_image")
    timings["landmarks"] = time.perf_counter() - t
    step(45, "Found the target face")

    t = time.perf_counter()
    h, w = target.shape[:2]
    warped = target.astype(np.float32).copy()
    tris = _triangles(dst_pts, w, h)
    for i, j, k in tris:
        _warp_triangle(source, warped, src_pts[[i, j, k]], dst_pts[[i, j, k]])
    timings["warp"] = time.perf_counter() - t
    step(70, "Warped the face")

    t = time.perf_counter()
    hull = cv2.convexHull(np.round(dst_pts).astype(np.int32))
    mask: Img = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, hull, 255)
    # Inside the hull only: the warp is exact there; the hull's rim comes from the blend.
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
    face = _match_colours(np.clip(warped, 0, 255).astype(np.uint8), target, mask)
    x, y, bw, bh = cv2.boundingRect(hull)
    # seamlessClone centres the mask's bounding box on this point: the box's own centre keeps it in place.
    mx, my, mw, mh = cv2.boundingRect(mask)
    centre = (mx + mw // 2, my + mh // 2)
    try:
        blended = cv2.seamlessClone(
            cv2.cvtColor(face, cv2.COLOR_RGB2BGR),
            cv2.cvtColor(target, cv2.COLOR_RGB2BGR),
            mask.copy(),  # seamlessClone writes into the mask it is given
            centre,
            cv2.NORMAL_CLONE,
        )
        cloned = cv2.cvtColor(blended, cv2.COLOR_BGR2RGB)
        # seamlessClone rewrites its whole working rectangle (by a level or two); only the
        # hull's pixels are taken from it, so the rest of the photo stays exactly as sent.
        out = np.where(mask[..., None] > 0, cloned, target).astype(np.uint8)
        blend = "seamless-clone"
    except cv2.error:
        # A hull touching the image border can fall outside seamlessClone's ROI: feathered alpha instead.
        soft = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 3)[..., None]
        out = (face * soft + target * (1 - soft)).astype(np.uint8)
        blend = "feathered-alpha"
    timings["blend"] = time.perf_counter() - t
    step(90, "Blended")
    return out, {
        "method": METHOD,
        "blend": blend,
        "triangles": len(tris),
        "source_landmarks": np.round(src_pts, 1).tolist(),
        "target_landmarks": np.round(dst_pts, 1).tolist(),
        "face_box": [x, y, bw, bh],
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
