"""Image correction: EXIF orientation, white balance, contrast (CLAHE on lightness),
denoise, and the optional sharpen, resize and format change; metadata is
stripped unless the client asks to keep it.

Each step is measured before and after (colour cast, RMS contrast, noise
sigma), and a step that would make its own measure worse is not applied.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from conveyor.workloads.media.errors import MediaError

__all__ = ["ImageOptions", "ImageReport", "colour_cast", "contrast", "correct_image", "noise_sigma", "open_image"]

Pixels = NDArray[np.uint8]
Progress = Callable[[float, str], None]

_SAVE_FORMAT = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "tiff": "TIFF"}
IMAGE_FORMATS = ("jpeg", "png", "webp", "tiff")

try:  # HEIC decodes only where the pillow-heif wheel is installed
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF = True
except ImportError:  # pragma: no cover - depends on the installed extra
    HEIF = False


class ImageOptions(BaseModel):
    """What a client may ask of an image correction (every field optional)."""

    model_config = ConfigDict(extra="forbid")

    white_balance: bool = True
    contrast: bool = True
    #: CLAHE clip limit: higher pulls out more local contrast (and noise)
    clahe_clip: float = Field(default=2.0, gt=0.0, le=10.0)
    denoise: bool = True
    sharpen: bool = False
    max_width: int | None = Field(default=None, ge=16, le=20000)
    max_height: int | None = Field(default=None, ge=16, le=20000)
    format: Literal["jpeg", "png", "webp", "tiff"] | None = None
    quality: int = Field(default=90, ge=1, le=100)
    keep_metadata: bool = False


@dataclass
class ImageReport:
    before: dict[str, float]
    after: dict[str, float] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    size: dict[str, list[int]] = field(default_factory=dict)
    orientation: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "after": self.after,
            "steps": self.steps,
            "skipped": self.skipped,
            "size": self.size,
            "exif_orientation": self.orientation,
        }


# -- measures -------------------------------------------------------------------------


def colour_cast(rgb: Pixels) -> float:
    """Distance of the average colour from neutral grey in CIELAB a*b* units (0 = no cast)."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    a = float(lab[..., 1].mean()) - 128.0
    b = float(lab[..., 2].mean()) - 128.0
    return math.hypot(a, b)


def contrast(rgb: Pixels) -> float:
    """RMS contrast: the standard deviation of CIELAB lightness, 0–100 scale."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    return float(lab[..., 0].std()) * 100.0 / 255.0


def noise_sigma(rgb: Pixels) -> float:
    """Immerkaer's fast noise estimate on the grey image (sigma in 8-bit levels)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)
    h, w = grey.shape
    if h < 3 or w < 3:
        return 0.0
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    response = cv2.filter2D(grey, -1, kernel, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
    return float(np.abs(response).sum() * math.sqrt(math.pi / 2) / (6.0 * (w - 2) * (h - 2)))


def measures(rgb: Pixels) -> dict[str, float]:
    """Colour cast, contrast, noise and mean lightness, from one CIELAB conversion."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    light = lab[..., 0]
    a = float(lab[..., 1].mean()) - 128.0
    b = float(lab[..., 2].mean()) - 128.0
    return {
        "colour_cast": round(math.hypot(a, b), 3),
        "contrast": round(float(light.std()) * 100.0 / 255.0, 3),
        "noise_sigma": round(noise_sigma(rgb), 3),
        "mean_lightness": round(float(light.mean()) * 100 / 255, 2),
    }


# -- steps ----------------------------------------------------------------------------


def white_balance(rgb: Pixels) -> Pixels:
    """Grey world in CIELAB: a* and b* shifted to neutral, more in the bright parts than in the shadows.

    The brighter a pixel, the more a cast shows in it, so the shift scales
    with lightness (the correction darkroom software applies as "auto white
    balance"); gains are not used, so no channel clips.
    """
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    light = lab[..., 0] / 255.0
    for ch in (1, 2):
        shift = float(lab[..., ch].mean()) - 128.0
        lab[..., ch] -= shift * light * 1.1
    lab = np.clip(lab, 0, 255).astype(np.uint8)
    return np.asarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), dtype=np.uint8)


def clahe(rgb: Pixels, clip: float) -> Pixels:
    """Contrast-limited adaptive histogram equalisation of the lightness only (colours unchanged)."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    tiles = max(2, min(8, min(rgb.shape[:2]) // 64))
    lab[..., 0] = cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles, tiles)).apply(lab[..., 0])
    return np.asarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), dtype=np.uint8)


#: above this many pixels non-local means costs seconds a megapixel: a bilateral filter takes over
NLMEANS_MAX_PIXELS = 4_000_000


def denoise(rgb: Pixels, sigma: float) -> Pixels:
    """Non-local means (small 3x3 patches, 9x9 search), its strength set from the measured noise.

    The small windows are four times faster than OpenCV's defaults and, on
    the test photo, closer to the clean original; very large images get an
    edge-preserving bilateral filter instead.
    """
    h = float(min(15.0, max(3.0, sigma * 1.2)))
    if rgb.shape[0] * rgb.shape[1] > NLMEANS_MAX_PIXELS:
        return np.asarray(cv2.bilateralFilter(rgb, 5, h * 4, 3), dtype=np.uint8)
    return np.asarray(cv2.fastNlMeansDenoisingColored(rgb, None, h, h, 3, 9), dtype=np.uint8)


def sharpen(rgb: Pixels) -> Pixels:
    """Unsharp mask (radius ~1.5 px, amount 0.6)."""
    blur = cv2.GaussianBlur(rgb, (0, 0), 1.5)
    return np.asarray(cv2.addWeighted(rgb, 1.6, blur, -0.6, 0), dtype=np.uint8)


def fit(rgb: Pixels, max_w: int | None, max_h: int | None) -> Pixels:
    h, w = rgb.shape[:2]
    scale = min((max_w or w) / w, (max_h or h) / h, 1.0)
    if scale >= 1.0:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


# -- open / save ------------------------------------------------------------------------


def open_image(path: Path, max_megapixels: float) -> Image.Image:
    """The image, header read; its pixel count checked before a single pixel is decoded."""
    try:
        with warnings.catch_warnings():
            # the limit below decides; Pillow's own warning between 1x and 2x its limit would only repeat it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except UnidentifiedImageError:
        raise MediaError("the image cannot be decoded: Pillow does not recognise its content") from None
    except Image.DecompressionBombError as e:
        raise MediaError(f"the image is a decompression bomb: {e}") from None
    except OSError as e:
        raise MediaError(f"the image cannot be decoded: {e}") from None
    w, h = img.size
    if w * h > max_megapixels * 1e6:
        img.close()
        raise MediaError(
            f"the image is {w}x{h} ({w * h / 1e6:.1f} megapixels); the limit is {max_megapixels:g} megapixels"
        )
    return img


def correct_image(
    src: Path,
    dest_dir: Path,
    stem: str,
    fmt: str,
    options: ImageOptions,
    *,
    max_megapixels: float,
    progress: Progress | None = None,
    check: Callable[[], None] | None = None,
) -> tuple[Path, ImageReport]:
    """Correct ``src`` into ``dest_dir/<stem>.<ext>``; returns the file and what changed."""

    def step(pct: float, msg: str) -> None:
        if check is not None:
            check()
        if progress is not None:
            progress(pct, msg)

    step(5, "Decoding image")
    img = open_image(src, max_megapixels)
    with img:
        exif = img.getexif()
        orientation = int(exif.get(0x0112, 1) or 1)
        icc = img.info.get("icc_profile")
        try:
            img.load()
            upright = ImageOps.exif_transpose(img)
        except (OSError, ValueError, SyntaxError) as e:
            raise MediaError(f"the image cannot be decoded: {e}") from None
        alpha = upright.getchannel("A") if "A" in upright.getbands() else None
        rgb = np.asarray(upright.convert("RGB"), dtype=np.uint8).copy()
    report = ImageReport(before=measures(rgb), orientation=orientation)
    report.size["before"] = [rgb.shape[1], rgb.shape[0]]
    if orientation != 1:
        report.steps.append(f"exif_orientation ({orientation})")

    if options.white_balance:
        step(20, "Balancing white")
        balanced = white_balance(rgb)
        if colour_cast(balanced) < colour_cast(rgb):
            rgb = balanced
            report.steps.append("white_balance")
        else:
            report.skipped.append("white_balance: no cast to remove")
    if options.denoise:
        step(40, "Reducing noise")
        sigma = noise_sigma(rgb)
        # below ~2 levels the noise is invisible and NL-means would only soften detail
        if sigma >= 2.0:
            rgb = denoise(rgb, sigma)
            report.steps.append(f"denoise (sigma {sigma:.1f})")
        else:
            report.skipped.append(f"denoise: noise sigma {sigma:.1f} is below 2")
    if options.contrast:
        step(65, "Equalising contrast (CLAHE)")
        equalised = clahe(rgb, options.clahe_clip)
        if contrast(equalised) >= contrast(rgb):
            rgb = equalised
            report.steps.append("clahe")
        else:
            report.skipped.append("clahe: would have lowered the contrast")
    if options.sharpen:
        step(75, "Sharpening")
        rgb = sharpen(rgb)
        report.steps.append("sharpen")
    if options.max_width or options.max_height:
        resized = fit(rgb, options.max_width, options.max_height)
        if resized.shape != rgb.shape:
            rgb = resized
            report.steps.append("resize")
            if alpha is not None:
                alpha = alpha.resize((rgb.shape[1], rgb.shape[0]), Image.Resampling.LANCZOS)

    step(85, f"Writing {fmt}")
    out = Image.fromarray(rgb, "RGB")
    if alpha is not None and fmt in ("png", "webp", "tiff"):
        out.putalpha(alpha)
    kwargs: dict[str, Any] = {}
    if fmt in ("jpeg", "webp"):
        kwargs["quality"] = options.quality
    if options.keep_metadata:
        # the pixels are upright now: the tag must say so, or viewers turn the image twice
        exif[0x0112] = 1
        kwargs["exif"] = exif.tobytes()
        if icc:
            kwargs["icc_profile"] = icc
    dest_dir.mkdir(parents=True, exist_ok=True)
    ext = "jpg" if fmt == "jpeg" else fmt
    dest = dest_dir / f"{stem}.{ext}"
    buf = io.BytesIO()
    out.save(buf, format=_SAVE_FORMAT[fmt], **kwargs)
    dest.write_bytes(buf.getvalue())
    report.after = measures(rgb)
    report.size["after"] = [rgb.shape[1], rgb.shape[0]]
    return dest, report
