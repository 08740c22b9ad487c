"""Small valid files for the upload scenarios, made on the spot."""

from __future__ import annotations

import io

import numpy as np


def wav(seconds: float = 1.0, rate: int = 16_000) -> bytes:
    """A 440 Hz tone as 16-bit WAV."""
    import soundfile

    t = np.arange(int(seconds * rate)) / rate
    out = io.BytesIO()
    soundfile.write(out, 0.2 * np.sin(2 * np.pi * 440 * t), rate, format="WAV")
    return out.getvalue()


def png(side: int = 32) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()
