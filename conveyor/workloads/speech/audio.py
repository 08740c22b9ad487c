"""Audio in: base64 chunks joined, decoded and resampled to 16 kHz mono 16-bit PCM.

WAV, FLAC, OGG and MP3 decode through libsndfile (``soundfile``); anything it
cannot read (WebM/Opus from a browser's MediaRecorder, AAC, ...) goes through
the ``ffmpeg`` CLI. What neither can read is an ``AudioDecodeError`` that
names both decoders' complaints, which ends the task FAILURE with that text.
"""

from __future__ import annotations

import base64
import binascii
import io
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["SAMPLE_RATE", "AudioDecodeError", "Pcm", "decode_audio", "join_chunks"]

#: what the recognisers take
SAMPLE_RATE = 16_000


class AudioDecodeError(ValueError):
    """The audio could not be read; the message says which decoder said what."""


@dataclass(frozen=True, slots=True)
class Pcm:
    """Mono 16-bit little-endian samples at ``SAMPLE_RATE``."""

    data: bytes
    decoder: str

    @property
    def seconds(self) -> float:
        return len(self.data) / 2 / SAMPLE_RATE


def join_chunks(chunks: Sequence[str | bytes], *, max_bytes: int) -> bytes:
    """The audio file the chunks make, in order.

    A chunk may carry a ``data:audio/...;base64,`` prefix (what a browser's
    FileReader gives). Raises AudioDecodeError naming the first bad chunk.
    """
    parts: list[bytes] = []
    total = 0
    for i, chunk in enumerate(chunks):
        if isinstance(chunk, bytes):
            raw = chunk
        else:
            text = chunk.split(",", 1)[1] if chunk.startswith("data:") and "," in chunk else chunk
            try:
                raw = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as e:
                raise AudioDecodeError(f"audio chunk {i} is not valid base64: {e}") from None
        total += len(raw)
        if total > max_bytes:
            raise AudioDecodeError(f"the audio is larger than {max_bytes} bytes")
        parts.append(raw)
    data = b"".join(parts)
    if not data:
        raise AudioDecodeError("no audio: the chunks are empty")
    return data


def _with_soundfile(data: bytes) -> bytes:
    import numpy as np
    import soundfile as sf
    import soxr

    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    pcm = np.clip(mono * 32767.0, -32768, 32767).astype("<i2")
    return bytes(pcm.tobytes())


def _with_ffmpeg(data: bytes, timeout: float) -> bytes:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioDecodeError("ffmpeg is not installed (apt-get install ffmpeg)")
    proc = subprocess.run(
        [ffmpeg, "-nostdin", "-v", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"],
        input=data,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AudioDecodeError(lines[-1] if lines else f"ffmpeg exited with {proc.returncode} and no audio")
    return proc.stdout


def decode_audio(data: bytes, *, timeout: float = 120.0) -> Pcm:
    """The audio as 16 kHz mono PCM; AudioDecodeError saying why if no decoder reads it."""
    try:
        return Pcm(_with_soundfile(data), "soundfile")
    except Exception as e:  # libsndfile says "Format not recognised" and the like
        soundfile_error = f"{type(e).__name__}: {e}"
    try:
        return Pcm(_with_ffmpeg(data, timeout), "ffmpeg")
    except subprocess.TimeoutExpired:
        raise AudioDecodeError(f"could not decode the audio: soundfile: {soundfile_error}; ffmpeg timed out") from None
    except AudioDecodeError as e:
        raise AudioDecodeError(f"could not decode the audio: soundfile: {soundfile_error}; ffmpeg: {e}") from None
