"""Background removal: a border-seeded, colour-contrast GrabCut with refinement (no model download).

No registry package here ships a segmentation model inside its wheel that
installs beside ``opencv-python-headless`` (see the workload's doc), so the
mask comes from a classical pipeline:

1. the image is scaled so its longest side is ``work_side`` pixels;
2. the colours of a strip along the border are clustered (k-means in Lab):
   they model the background, on the assumption photos are framed with
   background around the subject;
3. each pixel's distance to the nearest background colour, smoothed, gives
   a foreground likelihood; Otsu's threshold on it seeds GrabCut (probable
   foreground / probable background, with the border strip as sure
   background wherever it looks like background);
4. GrabCut refines the seeds with colour models and the image's edges;
5. the mask is cleaned (small islands dropped, holes filled), scaled back
   to the full size, and feathered with an edge-aware blur so the alpha
   follows the photo's edges.
"""

from __future__ import annotations

import time
from typing import Any, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from conveyor.workloads.images.steps import Step, no_steps

#: pixel arrays as OpenCV hands them back (its stubs type every result loosely)
Img = NDArray[Any]

__all__ = ["METHOD", "remove_background"]

METHOD = "border-seeded-grabcut"


def _resize_to(rgb: Img, side: int) -> Img:
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def _border_mask(h: int, w: int, width: int) -> Img:
    m = np.zeros((h, w), dtype=bool)
    m[:width, :] = m[-width:, :] = True
    m[:, :width] = m[:, -width:] = True
    return m


def _likelihood(lab: Img, border: Img, clusters: int) -> Img:
    """Distance of each pixel's colour to the nearest border colour cluster, scaled to 0..1."""
    samples = lab[border].reshape(-1, 3)
    k = int(min(clusters, max(1, len(samples) // 50)))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(7)  # k-means starts are random: one seed, one mask for one image
    _, _, centres = cv2.kmeans(samples, k, cast(Any, None), criteria, 3, cv2.KMEANS_PP_CENTERS)
    flat = lab.reshape(-1, 3)
    dist = np.full(flat.shape[0], np.inf, dtype=np.float32)
    for c in centres:
        np.minimum(dist, np.linalg.norm(flat - c, axis=1), out=dist)
    d: Img = cv2.GaussianBlur(dist.reshape(lab.shape[:2]), (0, 0), 2.0)
    hi = float(np.percentile(d, 99.5)) or 1.0
    return np.clip(d / hi, 0, 1).astype(np.float32)


def _clean(mask: Img) -> Img:
    """Drop islands smaller than 5 % of the largest part; fill the holes of what stays."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= 0.05 * areas.max()) + 1
    out = np.isin(labels, keep).astype(np.uint8)
    # Holes: background parts that do not reach the border are enclosed by the subject.
    inv = (1 - out).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    h, w = out.shape
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        touches = x == 0 or y == 0 or x + bw == w or y + bh == h
        if not touches and area < 0.02 * h * w:
            out[labels == i] = 1
    return out


def remove_background(
    rgb: Img,
    *,
    work_side: int = 640,
    iterations: int = 5,
    step: Step = no_steps,
) -> tuple[Img, dict[str, Any]]:
    """The alpha mask (0..255, H×W) of the subject of ``rgb`` and timings of each stage."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    h, w = rgb.shape[:2]
    small = _resize_to(rgb, work_side)
    sh, sw = small.shape[:2]
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    strip = max(2, round(0.03 * min(sh, sw)))
    border = _border_mask(sh, sw, strip)
    like = _likelihood(lab, border, clusters=8)
    timings["model"] = time.perf_counter() - t0
    step(35, "Modelling the background")

    t = time.perf_counter()
    like8 = (like * 255).astype(np.uint8)
    thr, _ = cv2.threshold(like8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    seeds = np.full((sh, sw), cv2.GC_PR_BGD, dtype=np.uint8)
    seeds[like8 >= thr] = cv2.GC_PR_FGD
    # The border is sure background only where it looks like background: a subject
    # cut by the frame (a portrait's shoulders) keeps its border pixels open.
    seeds[border & (like8 < thr)] = cv2.GC_BGD
    sure_fg = cv2.erode((like8 >= min(255, int(thr * 1.6))).astype(np.uint8), np.ones((5, 5), np.uint8))
    seeds[sure_fg.astype(bool) & ~border] = cv2.GC_FGD
    mask = seeds.copy()
    if (mask == cv2.GC_PR_FGD).any() or (mask == cv2.GC_FGD).any():
        bgd = np.zeros((1, 65), np.float64)
        fgd = np.zeros((1, 65), np.float64)
        bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        # One GrabCut iteration at a time, so a cancel is seen between them.
        for i in range(iterations):
            cv2.grabCut(bgr, mask, (0, 0, 0, 0), bgd, fgd, 1, cv2.GC_INIT_WITH_MASK if i == 0 else cv2.GC_EVAL)
            step(35 + 45 * (i + 1) / iterations, f"Segmenting ({i + 1}/{iterations})")
    fg: Img = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    timings["segment"] = time.perf_counter() - t

    t = time.perf_counter()
    k = max(3, round(min(sh, sw) / 100)) | 1
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    fg = _clean(fg)
    # Back to full size on a soft mask, then an edge-aware smoothing guided by the photo.
    soft = cv2.resize(fg.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    radius = max(1.0, max(h, w) / max(sh, sw))
    soft = cv2.GaussianBlur(soft, (0, 0), radius * 0.8)
    alpha = np.clip(soft * 255 + 0.5, 0, 255).astype(np.uint8)
    timings["refine"] = time.perf_counter() - t
    step(90, "Refining the edges")
    return alpha, {
        "timings": {k2: round(v, 4) for k2, v in timings.items()},
        "work_size": [sw, sh],
        "foreground_fraction": round(float((alpha >= 128).mean()), 4),
    }
