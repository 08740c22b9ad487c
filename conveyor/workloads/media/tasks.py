"""``media.process_correction``: seed 000's ``process_correction(task_id, media_type, input, output_folder, options)``.

It runs on the ``media`` queue. The correction's row in ``correction_tasks``
is claimed (or made, when a Python caller gave only an id), the input is
resolved inside the tenant's storage, the correction for its media type
runs with progress per step, and the outputs are written to a hidden
folder that is renamed into ``output_folder`` only when everything is
there: a cancelled or failed correction leaves no partial output.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conveyor.context import TaskContext
from conveyor.errors import SoftTimeLimitExceeded, TaskCancelled
from conveyor.registry import task
from conveyor.workloads.media import db, storage
from conveyor.workloads.media.config import MediaSettings
from conveyor.workloads.media.errors import MediaError, OutsideStorage
from conveyor.workloads.media.probe import MEDIA_TYPES, sniff_file

__all__ = ["ProcessCorrection", "default_format", "output_url", "process_correction", "validate_options"]

log = logging.getLogger("conveyor.media")


class ProcessCorrection(BaseModel):
    """The seed's positional signature, in order: ``(task_id, media_type, input, output_folder, options)``."""

    model_config = ConfigDict(extra="forbid")

    #: also a folder name (uploads/<task_id>, outputs/<task_id>): no leading dot, so never "." or ".."
    task_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")
    media_type: Literal["audio", "image", "video"] | None = None
    input: str = Field(min_length=1, max_length=4096, description="a path inside the tenant's storage")
    output_folder: str | None = Field(default=None, max_length=4096, description="default: outputs/<task_id>")
    options: dict[str, Any] = Field(default_factory=dict)


def output_url(task_id: str, name: str) -> str:
    return f"/corr/tasks/{task_id}/output/{name}"


def validate_options(media_type: str, options: dict[str, Any]) -> BaseModel:
    """The options model of ``media_type``; pydantic's ValidationError names any bad field."""
    if media_type == "audio":
        from conveyor.workloads.media.audio import AudioOptions

        return AudioOptions.model_validate(options)
    if media_type == "image":
        from conveyor.workloads.media.image import ImageOptions

        return ImageOptions.model_validate(options)
    from conveyor.workloads.media.video import VideoOptions

    return VideoOptions.model_validate(options)


def default_format(media_type: str, sniffed: str) -> str:
    """The container an output gets when the client names none: the input's, where it can be written."""
    if media_type == "audio":
        return sniffed if sniffed in ("wav", "flac", "ogg", "mp3", "m4a") else "m4a"
    if media_type == "image":
        return sniffed if sniffed in ("jpeg", "png", "webp", "tiff") else "jpeg"
    return "mp4"


def _media_settings(ctx: TaskContext) -> MediaSettings:
    settings = ctx.resources.workload_settings("media")
    return settings if isinstance(settings, MediaSettings) else MediaSettings()


def _detect(path: Path, asked: str | None, ffprobe_binary: str) -> tuple[str, str]:
    found = sniff_file(path, ffprobe_binary=ffprobe_binary)
    if found is None:
        raise MediaError("the input is not audio, image or video that this service can read")
    kind, fmt = found
    if asked is None or asked == kind:
        return kind, fmt
    # a video's sound track can be corrected as audio; nothing else crosses types
    if asked == "audio" and kind == "video":
        return "audio", fmt
    raise MediaError(f"the input is {kind} ({fmt}), not {asked}")


def _run(
    ctx: TaskContext,
    settings: MediaSettings,
    src: Path,
    media_type: str,
    fmt: str,
    options: BaseModel,
    work: Path,
    stem: str,
) -> tuple[Path, dict[str, Any]]:
    engine = ctx.resources.engine
    task_id = stem

    def progress(pct: float, msg: str) -> None:
        ctx.progress(pct, msg)
        db.update(engine, task_id, progress=round(pct, 2), message=msg)

    check = ctx.raise_if_cancelled
    out_name = f"{Path(src.name).stem[:80] or 'media'}_corrected"
    if media_type == "audio":
        from conveyor.workloads.media.audio import AudioOptions, correct_audio, duration_of

        assert isinstance(options, AudioOptions)
        seconds = duration_of(src, fmt, ffprobe=settings.ffprobe)
        if seconds > settings.max_audio_seconds:
            raise MediaError(f"the audio lasts {seconds:.0f} s; the limit is {settings.max_audio_seconds:g} s")
        target = options.target_lufs if options.target_lufs is not None else settings.target_lufs
        ceiling = options.true_peak_db if options.true_peak_db is not None else settings.true_peak_db
        out_fmt = options.format or default_format("audio", fmt)
        dest, audio_report = correct_audio(
            src, work, out_name, out_fmt, options, target=target, ceiling=ceiling, ffmpeg=settings.ffmpeg,
            progress=progress, check=check,
        )  # fmt: skip
        return dest, {**audio_report.as_dict(), "target_lufs": target, "true_peak_ceiling_dbtp": ceiling}
    if media_type == "image":
        from conveyor.workloads.media.image import HEIF, ImageOptions, correct_image

        assert isinstance(options, ImageOptions)
        if fmt == "heic" and not HEIF:
            raise MediaError("HEIC images need the pillow-heif package: pip install 'conveyor[media]'")
        out_fmt = options.format or default_format("image", fmt)
        dest, image_report = correct_image(
            src, work, out_name, out_fmt, options, max_megapixels=settings.max_image_megapixels,
            progress=progress, check=check,
        )  # fmt: skip
        return dest, image_report.as_dict()
    from conveyor.workloads.media.video import VideoOptions, correct_video

    assert isinstance(options, VideoOptions)
    target = options.target_lufs if options.target_lufs is not None else settings.target_lufs
    ceiling = options.true_peak_db if options.true_peak_db is not None else settings.true_peak_db
    dest, video_report = correct_video(
        src, work, out_name, options, target=target, ceiling=ceiling, max_seconds=settings.max_video_seconds,
        max_megapixels=settings.max_video_megapixels, ffmpeg=settings.ffmpeg, ffprobe_binary=settings.ffprobe,
        threads=settings.ffmpeg_threads, preset=settings.video_preset, progress=progress, check=check,
    )  # fmt: skip
    return dest, {**video_report.as_dict(), "target_lufs": target, "true_peak_ceiling_dbtp": ceiling}


def _publish(work: Path, folder: Path) -> list[Path]:
    """Move the finished files from the hidden work folder into the output folder."""
    folder.mkdir(parents=True, exist_ok=True)
    moved = []
    for item in sorted(work.iterdir()):
        target = folder / item.name
        os.replace(item, target)
        moved.append(target)
    shutil.rmtree(work, ignore_errors=True)
    return moved


@task(
    "media.process_correction",
    aliases=("process_correction",),
    queue="media",
    params=ProcessCorrection,
    time_limit=3 * 3600,
    soft_time_limit=3 * 3600 - 60,
    result_ttl=7 * 86400,
    heavy=True,
)
def process_correction(
    ctx: TaskContext,
    task_id: str,
    media_type: str | None,
    input: str,
    output_folder: str | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Correct one audio, image or video file (seed 000's process_correction)."""
    settings = _media_settings(ctx)
    engine = ctx.resources.engine
    root = storage.tenant_root(ctx.resources.settings.data_dir, ctx.tenant)
    root.mkdir(parents=True, exist_ok=True)
    options = dict(options or {})
    folder_given = output_folder or f"outputs/{task_id}"
    row = db.claim(
        engine, task_id, ctx.tenant, ctx.task_id, media_type=media_type or "audio", input=input,
        output_folder=folder_given, options=options,
    )  # fmt: skip
    if row is None:
        raise MediaError(f"correction task id {task_id!r} belongs to another tenant; choose another id")
    work: Path | None = None
    try:
        ctx.progress(1, "Checking the input")
        try:
            src = storage.resolve_inside(root, input, "input")
            folder = storage.resolve_inside(root, folder_given, "output_folder")
        except OutsideStorage as e:
            raise MediaError(e.message) from None
        if not src.is_file():
            raise MediaError(
                f"File access issues: the input {input!r} does not exist in the tenant's storage "
                "(is the shared volume mounted on this worker?)"
            )
        kind, fmt = _detect(src, media_type, settings.ffprobe)
        if kind not in MEDIA_TYPES:
            raise MediaError(f"unsupported media type {kind!r}")
        try:
            parsed = validate_options(kind, options)
        except ValidationError as e:
            bad = "; ".join(f"options.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
            raise MediaError(f"invalid options: {bad}") from None
        db.update(engine, task_id, media_type=kind)
        work = folder / f".partial-{ctx.task_id}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        _dest, report = _run(ctx, settings, src, kind, fmt, parsed, work, task_id)
        ctx.raise_if_cancelled()
        files = _publish(work, folder)
        work = None
        outputs = [
            {"name": f.name, "url": output_url(task_id, f.name), "media_type": kind, "size_bytes": f.stat().st_size}
            for f in files
        ]
        result = {
            "task_id": task_id,
            "media_type": kind,
            "input_format": fmt,
            "output_folder": str(folder.relative_to(root.resolve())),
            "outputs": outputs,
            "output_file": outputs[0]["name"] if outputs else None,
            "measurements": report,
        }
        db.finish(engine, task_id, "SUCCESS", result=result, message="Correction complete", job_id=ctx.task_id)
        ctx.progress(100, "Correction complete")
        return result
    except TaskCancelled:
        db.finish(engine, task_id, "CANCELLED", error="the correction was cancelled", message="Cancelled")
        raise
    except SoftTimeLimitExceeded:
        db.finish(engine, task_id, "FAILURE", error="the correction ran past its time limit", message="Failed")
        raise
    except MediaError as e:
        db.finish(engine, task_id, "FAILURE", error=str(e), message="Failed")
        raise
    except Exception as e:
        # anything else is a bug or an infrastructure failure: the record says what, the worker log has the trace
        log.exception("correction %s failed", task_id)
        db.finish(engine, task_id, "FAILURE", error=f"{type(e).__name__}: {e}", message="Failed")
        raise
    finally:
        if work is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(work, ignore_errors=True)
