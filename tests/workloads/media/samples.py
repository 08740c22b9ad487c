"""Tiny real media made in the tests: synthesised speech, a sample photo with a cast, a test-pattern clip.

And the independent meter the checks use: ffmpeg's ``ebur128`` filter, run
on the decoded output file, never our own measuring code.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

SENTENCE = "Hello world. The quick brown fox jumps over the lazy dog."


def need(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is not installed; scripts/test installs it with apt-get")


def speech(dest: Path) -> tuple[np.ndarray, int]:
    """About three seconds of speech from flite (espeak-ng when flite is absent), as float32 (n, 1)."""
    import soundfile as sf

    if shutil.which("flite"):
        subprocess.run(["flite", "-t", SENTENCE, "-o", str(dest)], check=True, capture_output=True)
    else:
        need("espeak-ng")
        subprocess.run(["espeak-ng", "-w", str(dest), SENTENCE], check=True, capture_output=True)
    data, rate = sf.read(str(dest), dtype="float32", always_2d=True)
    return data, int(rate)


def noisy_quiet_speech(dest: Path, *, lufs: float = -35.0, snr_db: float = 15.0, seconds_pad: float = 0.4) -> Path:
    """Speech with white noise, 50 Hz rumble and a DC offset, scaled to ``lufs`` (pyloudnorm's meter)."""
    import pyloudnorm
    import soundfile as sf

    dest.parent.mkdir(parents=True, exist_ok=True)
    voice, rate = speech(dest.with_name(f".voice-{dest.stem}.wav"))
    pad = np.zeros((int(rate * seconds_pad), 1), dtype=np.float32)
    voice = np.concatenate([pad, voice, pad])
    rng = np.random.default_rng(7)
    rms = float(np.sqrt(np.mean(voice**2)))
    noise = rng.standard_normal(voice.shape).astype(np.float32) * rms / (10 ** (snr_db / 20))
    t = np.arange(voice.shape[0], dtype=np.float32)[:, None] / rate
    mix = voice + noise + 0.3 * rms * np.sin(2 * np.pi * 50 * t) + 0.01
    gain = lufs - pyloudnorm.Meter(rate).integrated_loudness(mix.astype(np.float64))
    sf.write(str(dest), (mix * 10 ** (gain / 20)).astype(np.float32), rate, subtype="PCM_24")
    return dest


def ebur128(path: Path) -> dict[str, float]:
    """Integrated loudness, loudness range and true peak of ``path`` by ffmpeg's ebur128 filter."""
    need("ffmpeg")
    run = subprocess.run(
        ["ffmpeg", "-nostats", "-hide_banner", "-i", str(path), "-map", "0:a:0", "-af", "ebur128=peak=true",
         "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    summary = run.stderr[run.stderr.rindex("Summary:") :]
    return {
        "I": float(re.search(r"I:\s+(-?[\d.]+|-inf) LUFS", summary).group(1)),  # type: ignore[union-attr]
        "LRA": float(re.search(r"LRA:\s+(-?[\d.]+) LU", summary).group(1)),  # type: ignore[union-attr]
        "TP": float(re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary).group(1)),  # type: ignore[union-attr]
    }


def noise_floor_below_programme(path: Path) -> float:
    """dB between the file's quiet parts (10th percentile of 50 ms RMS) and its loudness (ebur128)."""
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    size = int(rate * 0.05)
    frames = data.shape[0] // size
    rms = np.sqrt(np.mean(data[: frames * size].mean(axis=1).reshape(frames, size) ** 2, axis=1))
    return float(20 * np.log10(np.percentile(rms, 10)) - ebur128(path)["I"])


def noise_floor_dbfs(path: Path) -> float:
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    size = int(rate * 0.05)
    frames = data.shape[0] // size
    rms = np.sqrt(np.mean(data[: frames * size].mean(axis=1).reshape(frames, size) ** 2, axis=1))
    return float(20 * np.log10(np.percentile(rms, 10)))


def photo() -> np.ndarray:
    """scikit-image's astronaut, halved to 256x256 (RGB uint8)."""
    import cv2
    import skimage.data

    return np.asarray(cv2.resize(skimage.data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA))


def cast_and_rotated_jpeg(dest: Path, *, noise: float = 5.0) -> np.ndarray:
    """The photo with a warm cast and noise, stored turned with EXIF orientation 6; returns the upright original."""
    from PIL import Image

    upright = photo()
    rng = np.random.default_rng(3)
    cast = upright.astype(np.float32) * np.array([1.18, 1.0, 0.72], dtype=np.float32) + 12
    cast += rng.normal(0, noise, cast.shape).astype(np.float32)
    img = Image.fromarray(np.clip(cast, 0, 255).astype(np.uint8))
    # orientation 6 says "turn 90 degrees clockwise to show": store it turned the other way
    stored = img.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Conveyor test camera"
    stored.save(dest, format="JPEG", quality=95, exif=exif.tobytes())
    return upright


def quiet_clip(dest: Path, *, seconds: float = 1.0, volume: float = 0.02, rotate: int | None = None) -> Path:
    """A 160x120 test-pattern clip with a quiet 440 Hz tone (H.264/AAC), optionally with a rotate tag."""
    need("ffmpeg")
    plain = dest if rotate is None else dest.with_name("plain-" + dest.name)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=25:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds},volume={volume}",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(plain)],
        check=True, capture_output=True,
    )  # fmt: skip
    if rotate is not None:
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", str(plain), "-c", "copy", "-metadata:s:v:0", f"rotate={rotate}",
             str(dest)],
            check=True, capture_output=True,
        )  # fmt: skip
    return dest


def probe_duration(path: Path) -> float:
    run = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(run.stdout.strip())


def png_bomb(dest: Path, side: int = 30000) -> Path:
    """A PNG whose header declares ``side`` x ``side`` pixels over a few bytes of data: a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    body = zlib.compress(b"\x00" * 64)
    dest.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return dest
