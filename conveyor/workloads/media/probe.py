"""What a file is: its media type from its first bytes, and its streams from ffprobe.

The type is read from the content, never from the client's file name or
Content-Type: a renamed file is still what its bytes say.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from conveyor.workloads.media.errors import MediaError

__all__ = ["MEDIA_TYPES", "Probe", "ffprobe", "sniff", "sniff_file"]

MediaType = Literal["audio", "image", "video"]
MEDIA_TYPES: tuple[MediaType, ...] = ("audio", "image", "video")

#: ISO base media brands that hold a still image (HEIF family)
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
#: brands of audio-only MP4 files
_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A "}


def sniff(head: bytes) -> tuple[MediaType, str] | None:
    """``(media_type, format)`` from a file's first bytes (64 are enough), or None if unknown."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image", "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio", "wav"
    if head[:4] in (b"RF64", b"BW64"):
        return "audio", "wav"
    if head.startswith(b"fLaC"):
        return "audio", "flac"
    if head.startswith(b"OggS"):
        # Ogg may carry Theora video; the first page names the codec of the first stream.
        return ("video", "ogg") if b"\x80theora" in head[:64] else ("audio", "ogg")
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06):
        return "audio", "mp3"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "image", "heic"
        if brand in _AUDIO_BRANDS:
            return "audio", "m4a"
        return "video", "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "webm" if b"webm" in head[:64] else "mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", "avi"
    return None


def sniff_file(path: Path, *, ffprobe_binary: str | None = None) -> tuple[MediaType, str] | None:
    """``sniff`` of the file's head; with ``ffprobe_binary``, a video container holding only
    sound (an .m4a written with a generic brand, an audio-only .webm) is called audio."""
    with open(path, "rb") as f:
        found = sniff(f.read(64))
    if found is not None and found[0] == "video" and ffprobe_binary is not None:
        try:
            streams = ffprobe(path, binary=ffprobe_binary)
        except MediaError:
            return found  # corrupt: the correction will say what the decoder said
        if streams.has_audio and not streams.has_video:
            return "audio", found[1]
    return found


@dataclass(frozen=True)
class Probe:
    """The streams ffprobe found in a file."""

    duration: float
    has_audio: bool
    has_video: bool
    width: int = 0
    height: int = 0
    #: the display matrix's rotation in degrees as ffprobe reports it (0: upright as stored)
    rotation: int = 0
    sample_rate: int = 0
    channels: int = 0
    video_codec: str = ""
    audio_codec: str = ""
    frame_rate: float = 0.0


def _rotation(stream: dict[str, Any]) -> int:
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return int(float(side["rotation"]))
    tag = (stream.get("tags") or {}).get("rotate")
    return int(tag) if tag and str(tag).lstrip("-").isdigit() else 0


def _rate(text: str) -> float:
    num, _, den = (text or "0/1").partition("/")
    try:
        return float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0


def ffprobe(path: Path, *, binary: str = "ffprobe", timeout: float = 60.0) -> Probe:
    """Streams and duration; MediaError with ffprobe's own complaint if it cannot read the file."""
    try:
        run = subprocess.run(
            [binary, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise MediaError(f"{binary} is not installed; install ffmpeg (apt-get install ffmpeg)") from None
    except subprocess.TimeoutExpired:
        raise MediaError(f"ffprobe did not finish reading the file within {timeout:g} s") from None
    err = run.stderr.decode("utf-8", "replace").strip()
    if run.returncode != 0:
        raise MediaError(f"the file cannot be decoded: {err.splitlines()[-1] if err else 'ffprobe failed'}")
    info = json.loads(run.stdout or b"{}")
    streams = info.get("streams") or []
    video = next((s for s in streams if s.get("codec_type") == "video" and not _is_cover(s)), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    duration = float((info.get("format") or {}).get("duration") or 0.0)
    if not duration:
        duration = max((float(s.get("duration") or 0.0) for s in streams), default=0.0)
    return Probe(
        duration=duration,
        has_audio=audio is not None,
        has_video=video is not None,
        width=int(video.get("width") or 0) if video else 0,
        height=int(video.get("height") or 0) if video else 0,
        rotation=_rotation(video) if video else 0,
        sample_rate=int(audio.get("sample_rate") or 0) if audio else 0,
        channels=int(audio.get("channels") or 0) if audio else 0,
        video_codec=str(video.get("codec_name") or "") if video else "",
        audio_codec=str(audio.get("codec_name") or "") if audio else "",
        frame_rate=_rate(str(video.get("avg_frame_rate") or "")) if video else 0.0,
    )


def _is_cover(stream: dict[str, Any]) -> bool:
    """An attached picture (album art in an MP3 or M4A) is not a video."""
    return bool((stream.get("disposition") or {}).get("attached_pic"))
