"""Images in and out: base64 (with or without a ``data:`` prefix) to pixels, pixels to a base64 PNG.

Every check names the field it was given, so a route turns a bad image into
a 422 (or 413 over a limit) and a task into a FAILURE saying which image.
The pixel limit is checked from the file's header, before any pixel is
decoded: a 20,000 × 20,000 PNG of a few hundred kilobytes is refused without
allocating its 1.2 GB.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import re
import warnings

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from conveyor.workloads.images.errors import ImageInputError, ImageTooLarge

__all__ = ["DecodedImage", "decode_base64", "decode_image", "encode_png", "probe", "strip_data_url"]

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)
_WHITESPACE = re.compile(r"\s+")
#: formats a client may send; anything else Pillow opens (PSD, ICNS, EPS...) is refused
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")


@dataclasses.dataclass(frozen=True, slots=True)
class DecodedImage:
    """Pixels of one field as RGB (and the alpha channel when the file had one)."""

    rgb: NDArray[np.uint8]
    alpha: NDArray[np.uint8] | None
    format: str

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def strip_data_url(text: str) -> str:
    """The base64 part of ``data:image/png;base64,....`` (or the text itself, without whitespace)."""
    text = text.strip()
    m = _DATA_URL.match(text)
    if m is not None:
        text = text[m.end() :]
    return _WHITESPACE.sub("", text)


def decode_base64(field: str, text: object, *, max_bytes: int) -> bytes:
    """The file bytes of a base64 field; ImageInputError for bad base64, ImageTooLarge over ``max_bytes``."""
    if not isinstance(text, str):
        raise ImageInputError(field, f"must be a base64 string, not {type(text).__name__}")
    body = strip_data_url(text)
    if not body:
        raise ImageInputError(field, "is empty; send the image as base64 or as a file")
    # Checked on the text so a huge field is refused before it is decoded.
    if len(body) * 3 // 4 > max_bytes:
        raise ImageTooLarge(field, f"is larger than {max_bytes / 2**20:g} MiB", max_bytes=max_bytes)
    if len(body) % 4 == 1:
        raise ImageInputError(field, "is not valid base64 (truncated: its length is not a whole number of bytes)")
    try:
        data = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageInputError(field, f"is not valid base64 ({e})") from None
    return data


def _open(field: str, data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageInputError(field, "is empty")
    try:
        with warnings.catch_warnings():
            # We check the size ourselves below, with our own limit and the field's name.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(
            field, f"has too many pixels ({e}); the limit is {max_pixels:,}", max_pixels=max_pixels
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageInputError(field, f"is not an image this service reads ({type(e).__name__})") from None
    if img.format not in FORMATS:
        raise ImageInputError(field, f"is a {img.format} image; send one of {', '.join(FORMATS)}")
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageInputError(field, "has no pixels")
    if w * h > max_pixels:
        raise ImageTooLarge(
            field, f"is {w} × {h} = {w * h:,} pixels; the limit is {max_pixels:,}", max_pixels=max_pixels, size=[w, h]
        )
    return img


def probe(field: str, data: bytes, *, max_pixels: int) -> tuple[int, int]:
    """Width and height from the header, after the format and pixel checks; nothing is decoded."""
    return _open(field, data, max_pixels).size


def decode_image(field: str, data: bytes, *, max_pixels: int) -> DecodedImage:
    """The whole image decoded (EXIF rotation applied); a truncated or corrupt file names the field."""
    img = _open(field, data, max_pixels)
    fmt = str(img.format)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            img = ImageOps.exif_transpose(img) or img
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageInputError(field, f"cannot be decoded: the file is truncated or corrupt ({e})") from None
    if img.size[0] * img.size[1] > max_pixels:  # a rotated or multi-frame file may decode larger
        raise ImageTooLarge(field, f"decodes to more than {max_pixels:,} pixels", max_pixels=max_pixels)
    alpha: NDArray[np.uint8] | None = None
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba)[:, :, 3].copy()
        rgb = np.ascontiguousarray(np.asarray(rgba)[:, :, :3])
    else:
        rgb = np.ascontiguousarray(np.asarray(img.convert("RGB")))
    return DecodedImage(rgb=rgb, alpha=alpha, format=fmt)


def encode_png(pixels: NDArray[np.uint8], *, compress_level: int = 6) -> str:
    """Base64 text of a PNG of ``pixels`` (H×W gray, H×W×3 RGB or H×W×4 RGBA)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG", compress_level=compress_level)
    return base64.b64encode(buf.getvalue()).decode("ascii")
