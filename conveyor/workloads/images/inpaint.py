"""Object removal: the masked region filled from its surroundings with OpenCV's inpainting.

``cv2.inpaint`` with Telea's fast-marching method (default) or Navier–Stokes
(``method="ns"``). Large holes are filled coarse to fine: the hole is first
inpainted on a downscaled copy (where it is small relative to the radius),
that fill is upsampled into the hole, and a full-resolution pass then
re-inpaints a thin band at the hole's edge so the seam matches the photo.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from conveyor.workloads.images.steps import Step, no_steps

#: pixel arrays as OpenCV hands them back (its stubs type every result loosely)
Img = NDArray[Any]

__all__ = ["Method", "box_mask", "remove_object"]

Method = Literal["telea", "ns"]
_FLAGS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}


def box_mask(height: int, width: int, box: tuple[int, int, int, int]) -> Img:
    """A 0/255 mask of the box ``(x, y, width, height)``."""
    x, y, bw, bh = box
    m = np.zeros((height, width), np.uint8)
    m[y : y + bh, x : x + bw] = 255
    return m


def remove_object(
    rgb: Img,
    mask: Img,
    *,
    method: Method = "telea",
    dilate: int = 3,
    step: Step = no_steps,
) -> tuple[Img, dict[str, Any]]:
    """``rgb`` with the pixels where ``mask`` > 0 replaced, and what was done."""
    t0 = time.perf_counter()
    flag = _FLAGS[method]
    hole: Img = (mask > 127).astype(np.uint8) * 255
    if dilate > 0:
        # A few pixels more than the mask: object edges leak anti-aliased colour outside it.
        hole = cv2.dilate(hole, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1)))
    area = int(np.count_nonzero(hole))
    info: dict[str, Any] = {"method": f"opencv-inpaint-{method}", "masked_pixels": area, "passes": 0}
    if area == 0:
        step(90, "Nothing to remove")
        info["timings"] = {"inpaint": 0.0}
        return rgb.copy(), info
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    # Hole "thickness": twice the largest distance from a hole pixel to its edge.
    thickness = float(cv2.distanceTransform(hole, cv2.DIST_L2, 3).max()) * 2
    radius = 5
    out = bgr
    h, w = hole.shape
    if thickness > 48 and min(h, w) >= 64:
        factor = min(8, int(thickness // 24))
        sw, sh = max(16, w // factor), max(16, h // factor)
        small = cv2.resize(bgr, (sw, sh), interpolation=cv2.INTER_AREA)
        small_hole = (cv2.resize(hole, (sw, sh), interpolation=cv2.INTER_AREA) > 0).astype(np.uint8) * 255
        coarse = cv2.inpaint(small, small_hole, radius, flag)
        info["passes"] += 1
        step(45, "Filling the region (coarse)")
        up = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        out = np.where(hole[..., None] > 0, up, bgr).astype(np.uint8)
        # The seam: re-inpaint a band along the hole's edge at full size.
        band = cv2.subtract(hole, cv2.erode(hole, np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)))
        out = cv2.inpaint(out, band, radius, flag)
        info["passes"] += 1
    else:
        out = cv2.inpaint(bgr, hole, radius, flag)
        info["passes"] += 1
    step(85, "Filling the region")
    info["timings"] = {"inpaint": round(time.perf_counter() - t0, 4)}
    return np.asarray(cv2.cvtColor(out, cv2.COLOR_BGR2RGB), dtype=np.uint8), info
