"""Style transfer without a neural network: named styles from OpenCV's non-photorealistic
filters, and colour plus texture transfer from a ``style_image``.

Named styles:

- ``pencil``: OpenCV's ``pencilSketch`` (graphite shading, grey);
- ``sketch``: an ink sketch by colour-dodge blending the grey image with its blurred negative;
- ``oil``: an edge-preserving smoothing, then colour quantisation (k-means in Lab) and a
  light brush-stroke relief;
- ``watercolor``: OpenCV's ``stylization`` with washes of flattened colour and soft edges;
- ``cartoon``: repeated bilateral filtering, quantised colours and bold adaptive-threshold outlines.

A ``style_image`` gives its colours (Reinhard's statistics transfer in Lab) and its
texture (the style image's fine detail, scaled to the content, added to the lightness).
"""

from __future__ import annotations

import time
from typing import Any, Literal, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from conveyor.workloads.images.steps import Step, no_steps

__all__ = ["STYLES", "StyleName", "apply_style", "transfer_style"]

StyleName = Literal["pencil", "sketch", "oil", "watercolor", "cartoon"]
STYLES: tuple[str, ...] = ("pencil", "sketch", "oil", "watercolor", "cartoon")

#: pixel arrays as OpenCV hands them back (its stubs type every result loosely)
RGB = NDArray[Any]


def _quantise(bgr: RGB, colours: int) -> RGB:
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
    samples = lab.reshape(-1, 3).astype(np.float32)
    # k-means on a subsample: the palette of a 12 MP photo is found from 40,000 pixels.
    rng = np.random.default_rng(11)
    pick = samples[rng.choice(len(samples), size=min(len(samples), 40_000), replace=False)]
    cv2.setRNGSeed(11)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 15, 1.0)
    _, _, centres = cv2.kmeans(pick, colours, cast(Any, None), criteria, 2, cv2.KMEANS_PP_CENTERS)
    # Nearest centre per pixel, in row blocks to bound memory.
    out = np.empty_like(samples)
    for i in range(0, len(samples), 262_144):
        block = samples[i : i + 262_144]
        d = ((block[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        out[i : i + 262_144] = centres[d.argmin(axis=1)]
    return np.asarray(cv2.cvtColor(out.reshape(lab.shape).astype(np.uint8), cv2.COLOR_LAB2BGR), dtype=np.uint8)


def _pencil(bgr: RGB, step: Step) -> RGB:
    gray, _ = cv2.pencilSketch(bgr, sigma_s=50, sigma_r=0.08, shade_factor=0.04)
    step(70, "Shading")
    return np.asarray(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), dtype=np.uint8)


def _sketch(bgr: RGB, step: Step) -> RGB:
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    blur = cv2.GaussianBlur(255 - gray, (0, 0), max(2.0, min(gray.shape) / 120))
    step(50, "Tracing lines")
    dodge = cv2.divide(gray, 255 - blur, scale=256)
    # Darken the lines a little: a plain dodge blend is faint on low-contrast photos.
    ink = cv2.multiply(dodge, dodge, scale=1 / 255)
    step(70, "Inking")
    return np.asarray(cv2.cvtColor(ink, cv2.COLOR_GRAY2BGR), dtype=np.uint8)


def _oil(bgr: RGB, step: Step) -> RGB:
    smooth = cv2.edgePreservingFilter(bgr, flags=cv2.RECURS_FILTER, sigma_s=40, sigma_r=0.35)
    step(40, "Laying paint")
    flat = _quantise(cv2.medianBlur(smooth, 5), 20)
    step(65, "Mixing colours")
    gray = cv2.cvtColor(flat, cv2.COLOR_BGR2GRAY).astype(np.float32)
    relief = cv2.filter2D(gray, -1, np.array([[-1, -1, 0], [-1, 0, 1], [0, 1, 1]], np.float32))
    out = flat.astype(np.float32) + 0.25 * relief[..., None]
    step(75, "Brush strokes")
    return np.clip(out, 0, 255).astype(np.uint8)


def _watercolor(bgr: RGB, step: Step) -> RGB:
    washed = cv2.stylization(bgr, sigma_s=60, sigma_r=0.45)
    step(60, "Washing colours")
    # Paper: a faint, fixed grain so the wash does not look like a flat poster.
    rng = np.random.default_rng(3)
    grain: RGB = cv2.GaussianBlur(rng.normal(0, 1, bgr.shape[:2]).astype(np.float32), (0, 0), 1.2)
    out: RGB = np.asarray(washed, dtype=np.float32) * (1 + 0.04 * grain[..., None]) + 6
    step(75, "Paper")
    return np.clip(out, 0, 255).astype(np.uint8)


def _cartoon(bgr: RGB, step: Step) -> RGB:
    small = bgr
    for _ in range(4):
        small = cv2.bilateralFilter(small, 9, 40, 7)
    step(40, "Flattening colours")
    flat = _quantise(small, 10)
    step(60, "Choosing the palette")
    gray = cv2.medianBlur(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), 7)
    block = max(3, (min(gray.shape) // 60) | 1)
    edges = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, block, 6)
    step(75, "Outlining")
    return np.asarray(cv2.bitwise_and(flat, flat, mask=edges), dtype=np.uint8)


_NAMED = {"pencil": _pencil, "sketch": _sketch, "oil": _oil, "watercolor": _watercolor, "cartoon": _cartoon}


def apply_style(rgb: RGB, style: str, *, strength: float = 1.0, step: Step = no_steps) -> tuple[RGB, dict[str, Any]]:
    """``rgb`` in the named style, blended with the original by ``1 - strength``."""
    t0 = time.perf_counter()
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    styled = _NAMED[style](bgr, step)
    if strength < 1:
        styled = cv2.addWeighted(styled, strength, bgr, 1 - strength, 0)
    out = np.asarray(cv2.cvtColor(styled, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    return out, {"method": f"opencv-{style}", "timings": {"style": round(time.perf_counter() - t0, 4)}}


def transfer_style(
    rgb: RGB, style_rgb: RGB, *, strength: float = 1.0, texture: float = 0.5, step: Step = no_steps
) -> tuple[RGB, dict[str, Any]]:
    """``rgb`` with the colour statistics and fine texture of ``style_rgb``."""
    t0 = time.perf_counter()
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    slab = cv2.cvtColor(style_rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    mu, sd = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0) + 1e-3
    smu, ssd = slab.reshape(-1, 3).mean(0), slab.reshape(-1, 3).std(0) + 1e-3
    out = (lab - mu) * (ssd / sd) + smu
    step(50, "Transferring colours")
    h, w = rgb.shape[:2]
    if texture > 0:
        # The style's fine detail (its lightness minus a blur of it), stretched over the content.
        sl = cv2.resize(slab[:, :, 0], (w, h), interpolation=cv2.INTER_LINEAR)
        detail = sl - cv2.GaussianBlur(sl, (0, 0), 3.0)
        out[:, :, 0] += texture * detail
        step(70, "Transferring texture")
    out = np.clip(out, 0, 255).astype(np.uint8)
    res = cv2.cvtColor(out, cv2.COLOR_LAB2RGB)
    if strength < 1:
        res = cv2.addWeighted(res, strength, rgb, 1 - strength, 0)
    info = {
        "method": "reinhard-lab-colour-transfer+texture",
        "timings": {"style": round(time.perf_counter() - t0, 4)},
    }
    return np.asarray(res, dtype=np.uint8), info
