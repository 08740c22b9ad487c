"""Video correction with the ffmpeg CLI: sound normalised by two-pass loudnorm (EBU R128),
rotation from metadata applied, and a web-safe H.264/AAC MP4 with fast start.

ffmpeg runs as a child process whose progress is read from ``-progress``;
a cancel or a passing limit kills it, and the caller removes the partial file.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.workloads.media.errors import MediaError
from conveyor.workloads.media.probe import Probe, ffprobe

__all__ = ["VideoOptions", "VideoReport", "correct_video", "measure_loudness", "run_ffmpeg"]

Progress = Callable[[float, str], None]


class VideoOptions(BaseModel):
    """What a client may ask of a video correction (every field optional)."""

    model_config = ConfigDict(extra="forbid")

    target_lufs: float | None = Field(default=None, ge=-70.0, le=-5.0)
    true_peak_db: float | None = Field(default=None, ge=-20.0, le=0.0)
    #: loudness range the dynamic fallback aims for, LU
    loudness_range: float = Field(default=11.0, ge=1.0, le=50.0)
    max_height: int = Field(default=1080, ge=16, le=4320)
    #: x264 constant rate factor: lower is better and bigger
    crf: int = Field(default=23, ge=0, le=51)
    audio_bitrate_k: int = Field(default=160, ge=32, le=512)


@dataclass
class VideoReport:
    before: dict[str, Any]
    after: dict[str, Any] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "steps": self.steps}


def _stderr_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return " / ".join(text[-lines:])


def run_ffmpeg(
    args: Sequence[str],
    *,
    binary: str = "ffmpeg",
    duration: float = 0.0,
    progress: Callable[[float], None] | None = None,
    check: Callable[[], None] | None = None,
    timeout: float | None = None,
) -> str:
    """Run ffmpeg with ``args``; returns its stderr. Kills it on a cancel (``check`` raising) or a timeout.

    Progress comes from ``-progress pipe:1`` as a fraction of ``duration``.
    """
    with tempfile.NamedTemporaryFile("w+b", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
    cmd = [binary, "-hide_banner", "-nostdin", "-y", "-progress", "pipe:1", "-nostats", *args]
    started = time.monotonic()
    try:
        with (
            open(log_path, "wb") as err,
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1) as proc,
        ):
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    if check is not None:
                        check()
                    if timeout is not None and time.monotonic() - started > timeout:
                        raise MediaError(f"ffmpeg did not finish within {timeout:g} s")
                    key, _, value = line.strip().partition("=")
                    if key == "out_time_us" and value.isdigit() and duration > 0 and progress is not None:
                        progress(min(1.0, int(value) / 1e6 / duration))
                code = proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        text = log_path.read_text("utf-8", "replace")
        if code != 0:
            raise MediaError(f"ffmpeg failed: {_stderr_tail(log_path)}")
        return text
    except FileNotFoundError:
        raise MediaError(f"{binary} is not installed; install ffmpeg (apt-get install ffmpeg)") from None
    finally:
        with contextlib.suppress(OSError):
            log_path.unlink()


_JSON = re.compile(r"\{[^{}]*\"input_i\"[^{}]*\}", re.S)


def _loudnorm_json(stderr: str) -> dict[str, Any]:
    found = _JSON.findall(stderr)
    if not found:
        raise MediaError("ffmpeg's loudnorm printed no measurement")
    data: dict[str, Any] = json.loads(found[-1])
    return data


def measure_loudness(
    path: Path,
    *,
    target: float,
    ceiling: float,
    lra: float = 11.0,
    binary: str = "ffmpeg",
    duration: float = 0.0,
    progress: Callable[[float], None] | None = None,
    check: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """loudnorm's first pass: the sound's integrated loudness, range, true peak and threshold."""
    stderr = run_ffmpeg(
        ["-i", str(path), "-map", "0:a:0", "-af", f"loudnorm=I={target}:TP={ceiling}:LRA={lra}:print_format=json",
         "-f", "null", "-"],
        binary=binary, duration=duration, progress=progress, check=check,
    )  # fmt: skip
    return _loudnorm_json(stderr)


def _figures(measured: dict[str, Any], prefix: str = "input") -> dict[str, float | None]:
    """loudnorm's figures as numbers; its "-inf" for silence becomes None (JSON has no infinity)."""

    def num(key: str) -> float | None:
        try:
            value = float(str(measured.get(f"{prefix}_{key}")))
        except ValueError:
            return None
        return round(value, 2) if math.isfinite(value) else None

    return {"integrated_lufs": num("i"), "loudness_range_lu": num("lra"), "true_peak_dbtp": num("tp")}


def _describe(probe: Probe, path: Path) -> dict[str, Any]:
    return {
        "duration_s": round(probe.duration, 3),
        "size_bytes": path.stat().st_size,
        "width": probe.width,
        "height": probe.height,
        "rotation": probe.rotation,
        "video_codec": probe.video_codec,
        "audio_codec": probe.audio_codec,
    }


def correct_video(
    src: Path,
    dest_dir: Path,
    stem: str,
    options: VideoOptions,
    *,
    target: float,
    ceiling: float,
    max_seconds: float,
    max_megapixels: float,
    ffmpeg: str = "ffmpeg",
    ffprobe_binary: str = "ffprobe",
    threads: int = 2,
    preset: str = "veryfast",
    progress: Progress | None = None,
    check: Callable[[], None] | None = None,
) -> tuple[Path, VideoReport]:
    """Correct ``src`` into ``dest_dir/<stem>.mp4``; returns the file and what changed."""

    def report_progress(lo: float, hi: float, msg: str) -> Callable[[float], None]:
        def inner(fraction: float) -> None:
            if progress is not None:
                progress(lo + (hi - lo) * fraction, msg)

        return inner

    if progress is not None:
        progress(3, "Probing video")
    probe = ffprobe(src, binary=ffprobe_binary)
    if not probe.has_video:
        raise MediaError("the file has no video stream")
    if probe.duration > max_seconds:
        raise MediaError(f"the video lasts {probe.duration:.0f} s; the limit is {max_seconds:g} s")
    if probe.width * probe.height > max_megapixels * 1e6:
        raise MediaError(
            f"the video is {probe.width}x{probe.height}; the limit is {max_megapixels:g} megapixels a frame"
        )
    report = VideoReport(before=_describe(probe, src))
    loudnorm = ""
    if probe.has_audio:
        msg = "Measuring loudness (loudnorm pass 1)"
        if progress is not None:
            progress(5, msg)
        measured = measure_loudness(
            src, target=target, ceiling=ceiling, lra=options.loudness_range, binary=ffmpeg,
            duration=probe.duration, progress=report_progress(5, 25, msg), check=check,
        )  # fmt: skip
        report.before.update(_figures(measured))
        level = _figures(measured)["integrated_lufs"]
        if level is None or level <= -70.0:
            report.steps.append("loudness: the sound is silent, left as it is")
        else:
            loudnorm = (
                f"loudnorm=I={target}:TP={ceiling}:LRA={options.loudness_range}"
                f":measured_I={measured['input_i']}:measured_TP={measured['input_tp']}"
                f":measured_LRA={measured['input_lra']}:measured_thresh={measured['input_thresh']}"
                f":offset={measured['target_offset']}:linear=true:print_format=json"
            )
            report.steps.append("loudness (two-pass loudnorm)")
    if probe.rotation:
        report.steps.append(f"rotation applied (display matrix {probe.rotation}°)")
    # even dimensions, at most max_height tall (after rotation: ffmpeg turns the frames first)
    h = options.max_height
    scale = f"scale='trunc(iw*min(1,{h}/ih)/2)*2':'trunc(ih*min(1,{h}/ih)/2)*2',format=yuv420p"
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{stem}.mp4"
    args = ["-threads", str(threads), "-i", str(src), "-map", "0:v:0", "-vf", scale,
            "-c:v", "libx264", "-preset", preset, "-crf", str(options.crf), "-profile:v", "high",
            "-movflags", "+faststart", "-map_metadata", "-1"]  # fmt: skip
    if probe.has_audio:
        args += ["-map", "0:a:0", "-c:a", "aac", "-b:a", f"{options.audio_bitrate_k}k", "-ar", "48000"]
        if loudnorm:
            args += ["-af", loudnorm]
    args += ["-f", "mp4", str(dest)]
    msg = "Encoding H.264/AAC" + (" with loudnorm pass 2" if loudnorm else "")
    if progress is not None:
        progress(25, msg)
    run_ffmpeg(args, binary=ffmpeg, duration=probe.duration, progress=report_progress(25, 90, msg), check=check)
    report.steps.append("h264/aac mp4, faststart")
    if progress is not None:
        progress(92, "Measuring the result")
    out = ffprobe(dest, binary=ffprobe_binary)
    report.after = _describe(out, dest)
    if out.has_audio:
        after = measure_loudness(dest, target=target, ceiling=ceiling, binary=ffmpeg, check=check)
        report.after.update(_figures(after))
    return dest, report
