"""Test images for the images workload: scikit-image's sample photos, composites with known masks, bad files."""

from __future__ import annotations

import base64
import functools
import io
import struct
import zlib

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image
from skimage import data

RGB = NDArray[np.uint8]


@functools.cache
def astronaut() -> RGB:
    return np.asarray(data.astronaut())


@functools.cache
def chelsea() -> RGB:
    return np.asarray(data.chelsea())


@functools.cache
def coffee() -> RGB:
    return np.asarray(data.coffee())


@functools.cache
def rocket() -> RGB:
    return np.asarray(data.rocket())


def png_bytes(pixels: RGB) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def jpeg_bytes(pixels: RGB, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def decode_png(text: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(text, validate=True)))
    assert img.format == "PNG"
    img.load()
    return img


def composite(fg: RGB, bg: RGB, shape: tuple[int, int], centre: tuple[int, int], axes: tuple[int, int]):
    """``fg`` inside an ellipse over ``bg`` (both scaled to ``shape``) and that ellipse as the true mask."""
    h, w = shape
    back = cv2.resize(bg, (w, h), interpolation=cv2.INTER_AREA)
    front = cv2.resize(fg, (w, h), interpolation=cv2.INTER_AREA)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
    return np.where(mask[..., None] == 1, front, back).astype(np.uint8), mask.astype(bool)


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid 1-bit PNG of ``width`` × ``height`` black pixels: a few hundred KiB that decode to 400 MP."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\x00" * (1 + (width + 7) // 8)
    z = zlib.compressobj(9)
    parts = [z.compress(row) for _ in range(height)]
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def psnr(a: RGB, b: RGB, where: NDArray[np.bool_]) -> float:
    diff = (a.astype(np.float64) - b.astype(np.float64))[where]
    mse = float((diff**2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def marked_face_source() -> tuple[RGB, tuple[int, int]]:
    """The astronaut's face, mirrored, scaled 1.4× and tinted, as a different photo to take a face from."""
    src = cv2.resize(astronaut()[40:300, 120:330], None, fx=1.4, fy=1.4, interpolation=cv2.INTER_CUBIC)
    src = np.ascontiguousarray(src[:, ::-1])
    src = np.clip(src.astype(np.float32) * [0.9, 1.0, 1.1], 0, 255).astype(np.uint8)
    return src, (src.shape[1], src.shape[0])
