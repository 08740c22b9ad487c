"""/corr/tasks: seed 000's correction routes — submit, poll, list, download, cancel, delete.

``POST /corr/tasks/`` takes a multipart upload (field ``file``, with the
text fields ``media_type``, ``options`` as JSON and ``output_folder``) or a
JSON body naming a path inside the tenant's storage (``input``). It writes
the correction row, submits ``media.process_correction`` and answers 202
with the correction's ``task_id``; the front end then polls
``GET /corr/tasks/<task_id>/``. Every route answers another tenant's
correction with 404.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
import sqlalchemy as sa
from fastapi import Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError

from conveyor.api.deps import App, Tenant
from conveyor.api.routing import SlashRouter
from conveyor.api.schemas import iso
from conveyor.app import Conveyor
from conveyor.errors import ConveyorError, InvalidParams, InvalidTransition, RequestError, UnsupportedMediaType
from conveyor.records import UNFINISHED_STATES, TaskRecord, new_task_id
from conveyor.stores.base import TaskQuery
from conveyor.uploads import receive_upload
from conveyor.workloads.media import db, storage
from conveyor.workloads.media.config import MediaSettings
from conveyor.workloads.media.errors import CorrectionNotFound, MediaError, MediaTooLarge, UnsupportedMedia
from conveyor.workloads.media.probe import MEDIA_TYPES, ffprobe, sniff_file

__all__ = ["router"]

router = SlashRouter(prefix="/corr/tasks", tags=["media"])

#: multipart framing around the file, allowed on top of the upload limit
MULTIPART_SLACK = 256 * 1024
_SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "media_type": {"type": "string", "enum": list(MEDIA_TYPES)},
                        "options": {"type": "string", "description": "a JSON object"},
                        "output_folder": {"type": "string"},
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["input"],
                    "properties": {
                        "input": {"type": "string", "description": "a path inside the tenant's storage"},
                        "media_type": {"type": "string", "enum": list(MEDIA_TYPES)},
                        "options": {"type": "object"},
                        "output_folder": {"type": "string"},
                    },
                }
            },
        },
    }
}


def _engine(app: Conveyor) -> sa.Engine:
    engine: sa.Engine = app.engine
    return engine


def _settings(app: Conveyor) -> MediaSettings:
    settings = app.workload_settings("media")
    return settings if isinstance(settings, MediaSettings) else MediaSettings()


def _options(raw: Any) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InvalidParams.for_field("options", f"must be a JSON object: {e.msg}") from None
    if not isinstance(raw, dict):
        raise InvalidParams.for_field("options", "must be a JSON object")
    return raw


def _media_type(raw: Any) -> str | None:
    if raw is None or raw == "":
        return None
    if raw not in MEDIA_TYPES:
        raise InvalidParams.for_field("media_type", f"must be one of {', '.join(MEDIA_TYPES)} (or absent to detect)")
    return str(raw)


def _check_options(media_type: str, options: dict[str, Any]) -> None:
    from conveyor.workloads.media.tasks import validate_options

    try:
        validate_options(media_type, options)
    except ValidationError as e:
        details = [
            {"field": "options." + ".".join(str(p) for p in err["loc"]), "message": err["msg"], "type": err["type"]}
            for err in e.errors(include_url=False, include_context=False)
        ]
        raise InvalidParams(
            f"Invalid options for {media_type}: {', '.join(d['field'] for d in details)}", details=details
        ) from None


def _precheck(path: Path, asked: str | None, settings: MediaSettings) -> tuple[str, str]:
    """Type by content (415) and size limits read from the header (413) before any work is queued.

    A file whose header cannot be read is let through: the correction then
    fails with the decoder's own message, which is what its record should say.
    """
    found = sniff_file(path, ffprobe_binary=settings.ffprobe)
    if found is None:
        raise UnsupportedMedia(
            "unsupported or undetectable media: send audio (wav, flac, ogg, mp3, m4a), an image "
            "(jpeg, png, webp, tiff, heic) or a video (mp4, mov, mkv, webm, avi)",
            details={"field": "file"},
        )
    sniffed, fmt = found
    if asked is not None and asked != sniffed and not (asked == "audio" and sniffed == "video"):
        raise UnsupportedMedia(f"the file is {sniffed} ({fmt}), not {asked}", details={"field": "media_type"})
    kind: str = asked or sniffed
    with contextlib.suppress(MediaError):
        if kind == "image":
            _precheck_image(path, settings)
        elif kind == "audio":
            from conveyor.workloads.media.audio import duration_of

            seconds = duration_of(path, fmt, ffprobe=settings.ffprobe)
            if seconds > settings.max_audio_seconds:
                raise MediaTooLarge(
                    f"the audio lasts {seconds:.0f} s; the limit is {settings.max_audio_seconds:g} s",
                    details={"duration_s": round(seconds, 1), "max_seconds": settings.max_audio_seconds},
                )
        else:
            probe = ffprobe(path, binary=settings.ffprobe)
            if probe.duration > settings.max_video_seconds:
                raise MediaTooLarge(
                    f"the video lasts {probe.duration:.0f} s; the limit is {settings.max_video_seconds:g} s",
                    details={"duration_s": round(probe.duration, 1), "max_seconds": settings.max_video_seconds},
                )
            if probe.width * probe.height > settings.max_video_megapixels * 1e6:
                raise MediaTooLarge(
                    f"the video is {probe.width}x{probe.height}; the limit is "
                    f"{settings.max_video_megapixels:g} megapixels a frame",
                    details={"width": probe.width, "height": probe.height},
                )
    return kind, fmt


def _precheck_image(path: Path, settings: MediaSettings) -> None:
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        # our own limit decides, below; Pillow's warning would only repeat it
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                w, h = img.size
        except Image.DecompressionBombError as e:
            raise MediaTooLarge(f"the image is a decompression bomb: {e}", details={"field": "file"}) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return  # corrupt: the correction will name the decoder's error
    if w * h > settings.max_image_megapixels * 1e6:
        raise MediaTooLarge(
            f"the image is {w}x{h} ({w * h / 1e6:.1f} megapixels); the limit is "
            f"{settings.max_image_megapixels:g} megapixels",
            details={"width": w, "height": h, "max_megapixels": settings.max_image_megapixels},
        )


def _links(task_id: str, job_id: str | None) -> dict[str, str]:
    base = f"/corr/tasks/{task_id}/"
    links = {"self": base, "cancel": f"{base}cancel/"}
    if job_id:
        links["task"] = f"/api/v1/tasks/{job_id}"
    return links


def _public(row: sa.Row[Any], task: TaskRecord | None) -> dict[str, Any]:
    """The correction record; while it runs, status, progress and message are its task's, live."""
    status, progress, message = row.status, float(row.progress or 0.0), row.message
    if row.status not in db.FINAL and task is not None and not task.finished:
        status, progress, message = task.state.value, float(task.progress), task.message or row.message
    return {
        "task_id": row.task_id,
        "job_id": row.job_id,
        "media_type": row.media_type,
        "input": row.input,
        "output_folder": row.output_folder,
        "options": row.options or {},
        "filename": row.filename,
        "size_bytes": row.size_bytes,
        "status": status,
        "progress": round(progress, 2),
        "message": message,
        "result": row.result,
        "error_message": row.error_message,
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "completed_at": iso(row.completed_at),
        "updated_at": iso(row.updated_at),
        "links": _links(row.task_id, row.job_id),
    }


def _row_of_python_submit(app: Conveyor, engine: sa.Engine, task_id: str, tenant: str) -> sa.Row[Any] | None:
    """The row of a correction submitted from Python (``process_correction.delay(...)``), written now.

    The routes write a correction's row before they submit; a Python caller
    goes straight to the task, which writes the row when it starts work. A
    client polling ``/corr/tasks/<id>/`` in between must see PENDING, not a
    404: so the first look at such a correction writes the row the route would
    have written, from its queued task. Only unfinished tasks count, so that a
    deleted correction (its task cancelled) stays deleted.
    """
    states, types = tuple(UNFINISHED_STATES), (_PROCESS_CORRECTION,)
    query = TaskQuery(tenant=tenant, states=states, types=types, limit=_UNCLAIMED_SCAN)
    task = next((t for t in app.store.query(query).items if (t.params or {}).get("task_id") == task_id), None)
    if task is None:
        return None
    params = task.params or {}
    with contextlib.suppress(sa.exc.IntegrityError):  # the task's own claim got there first: read that row
        db.insert(
            engine, task_id=task_id, tenant=tenant, job_id=task.id, media_type=params.get("media_type") or "audio",
            input=str(params.get("input") or ""), output_folder=params.get("output_folder") or f"outputs/{task_id}",
            options=params.get("options") or {}, created_at=task.created_at,
        )  # fmt: skip
    return db.find(engine, task_id, tenant)


_PROCESS_CORRECTION = "media.process_correction"
#: how many of a tenant's unfinished corrections a lookup of one submitted from Python reads at most
_UNCLAIMED_SCAN = 500


def _load(app: Conveyor, task_id: str, tenant: str) -> tuple[sa.Row[Any], TaskRecord | None]:
    engine = _engine(app)
    row = db.find(engine, task_id, tenant) or _row_of_python_submit(app, engine, task_id, tenant)
    if row is None:
        raise CorrectionNotFound(task_id)
    task = app.store.get(row.job_id) if row.job_id else None
    return db.reconcile(engine, row, task), task


def _submit(
    app: Conveyor,
    tenant: str,
    task_id: str,
    *,
    src: Path | None,
    input_rel: str,
    media_type: str | None,
    output_folder: str | None,
    options: dict[str, Any],
    filename: str | None,
    size: int | None,
) -> JSONResponse:
    settings = _settings(app)
    engine = _engine(app)
    root = storage.tenant_root(app.settings.data_dir, tenant)
    if src is not None and src.is_file():
        kind, _ = _precheck(src, media_type, settings)
    elif media_type is not None:
        kind = media_type  # missing here: the worker's FAILURE will name it ("File access issues")
    else:
        raise RequestError(
            f"the input {input_rel!r} does not exist in the tenant's storage, so its media type cannot be "
            "detected; upload the file or name media_type",
            details={"field": "input"},
        )
    _check_options(kind, options)
    folder = output_folder or f"outputs/{task_id}"
    storage.resolve_inside(root, folder, "output_folder")
    db.insert(
        engine, task_id=task_id, tenant=tenant, media_type=kind, input=input_rel, output_folder=folder,
        options=options, filename=filename, size_bytes=size,
    )  # fmt: skip
    params = {"task_id": task_id, "media_type": kind, "input": input_rel, "output_folder": folder, "options": options}
    try:
        record = app.manager.submit_task("media.process_correction", params, tenant=tenant)
    except BaseException:
        db.delete(engine, task_id)
        raise
    db.set_job(engine, task_id, record.id)
    return JSONResponse(
        {
            "task_id": task_id,
            "job_id": record.id,
            "status": "PENDING",
            "media_type": kind,
            "input": input_rel,
            "output_folder": folder,
            "message": "Correction queued",
            "links": _links(task_id, record.id),
        },
        status_code=202,
    )


@router.post(
    "/", status_code=202, summary="Queue a correction (upload or a path in storage)", openapi_extra=_SUBMIT_BODY
)
async def create_correction(request: Request, app: App, tenant: Tenant) -> JSONResponse:
    """Answers at once with the correction's ``task_id``; poll ``GET /corr/tasks/<task_id>/``."""
    settings = _settings(app)
    root = storage.tenant_root(app.settings.data_dir, tenant)
    task_id = new_task_id()
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() == "application/json":
        try:
            body = json.loads(await request.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError(f"the body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise InvalidParams.for_field("body", "must be a JSON object")
        given = body.get("input")
        if not isinstance(given, str) or not given:
            raise InvalidParams.for_field("input", "a path inside the tenant's storage is required (or upload 'file')")
        folder = body.get("output_folder")
        if folder is not None and not isinstance(folder, str):
            raise InvalidParams.for_field("output_folder", "must be a string")
        media_type = _media_type(body.get("media_type"))
        options = _options(body.get("options"))
        src = storage.resolve_inside(root, given, "input")
        rel = str(src.relative_to(root.resolve()))
        return await anyio.to_thread.run_sync(
            lambda: _submit(
                app, tenant, task_id, src=src, input_rel=rel, media_type=media_type, output_folder=folder,
                options=options, filename=src.name, size=src.stat().st_size if src.is_file() else None,
            )
        )  # fmt: skip

    max_bytes = int(settings.max_upload_mb * 1024 * 1024)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MULTIPART_SLACK:
        raise MediaTooLarge(
            f"the upload is larger than the limit of {settings.max_upload_mb:g} MiB",
            details={"max_bytes": max_bytes, "field": "file"},
        )
    upload_dir = root / "uploads" / task_id
    incoming = upload_dir / "upload.part"
    try:
        upload = await receive_upload(
            content_type,
            request.stream(),
            incoming,
            max_bytes=max_bytes,
            require_file=False,
            limit_details={"field": "file"},
            not_multipart="send the file as multipart/form-data in the field 'file', or JSON with 'input'",
        )
    except UnsupportedMediaType as e:
        raise UnsupportedMedia(e.message, details={"field": "file"}) from None
    try:
        if upload.path is None:
            given = upload.fields.get("input")
            if not given:
                raise InvalidParams.for_field(
                    "file", "upload the media in the multipart field 'file' (or name 'input')"
                )
            src = storage.resolve_inside(root, given, "input")
            storage.remove_tree(upload_dir)
            filename = src.name
        else:
            if upload.size == 0:
                raise UnsupportedMedia("the uploaded file is empty", details={"field": "file"})
            src = upload_dir / upload.filename
            incoming.rename(src)
            filename = upload.filename
        media_type = _media_type(upload.fields.get("media_type"))
        options = _options(upload.fields.get("options"))
        folder = upload.fields.get("output_folder") or None
        rel = str(src.resolve().relative_to(root.resolve()))
        return await anyio.to_thread.run_sync(
            lambda: _submit(
                app, tenant, task_id, src=src, input_rel=rel, media_type=media_type, output_folder=folder,
                options=options, filename=filename, size=upload.size or None,
            )
        )  # fmt: skip
    except BaseException:
        await anyio.to_thread.run_sync(storage.remove_tree, upload_dir)
        raise


@router.get("/", summary="The tenant's corrections, newest first")
async def list_corrections(
    app: App,
    tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,  # past it a database integer overflows (a 500)
    status: Annotated[str | None, Query(pattern="^(PENDING|PROCESSING|RETRY|SUCCESS|FAILURE|CANCELLED)$")] = None,
    media_type: Annotated[str | None, Query(pattern="^(audio|image|video)$")] = None,
) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        engine = _engine(app)
        total, rows = db.listing(engine, tenant, status=status, media_type=media_type, limit=limit, offset=offset)
        tasks = {t.id: t for t in app.store.get_many([r.job_id for r in rows if r.job_id])}
        data = [_public(db.reconcile(engine, r, tasks.get(r.job_id)), tasks.get(r.job_id)) for r in rows]
        return {"data": data, "count": total, "limit": limit, "offset": offset}

    return await anyio.to_thread.run_sync(read)


@router.get("/{task_id}/", summary="A correction: status, progress, result, error_message")
async def get_correction(task_id: str, app: App, tenant: Tenant) -> dict[str, Any]:
    return await anyio.to_thread.run_sync(lambda: _public(*_load(app, task_id, tenant)))


@router.get("/{task_id}/output/{name}", summary="Download one output file (streamed)", response_model=None)
async def download_output(task_id: str, name: str, app: App, tenant: Tenant) -> FileResponse:
    def locate() -> Path:
        row, _ = _load(app, task_id, tenant)
        outputs = (row.result or {}).get("outputs") or []
        if not any(o.get("name") == name for o in outputs):
            raise CorrectionNotFound(task_id, details={"output": name})
        root = storage.tenant_root(app.settings.data_dir, tenant)
        folder = storage.resolve_inside(root, row.output_folder, "output_folder")
        path = storage.resolve_inside(folder, name, "name")
        if not path.is_file():
            raise CorrectionNotFound(task_id)
        return path

    path = await anyio.to_thread.run_sync(locate)
    return FileResponse(path, filename=name)


@router.post("/{task_id}/cancel/", summary="Cancel a correction that has not finished")
async def cancel_correction(task_id: str, app: App, tenant: Tenant) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        row, task = _load(app, task_id, tenant)
        if row.status in db.FINAL or task is None or task.finished:
            raise InvalidTransition(
                f"correction {task_id} has already finished ({row.status})",
                details={"task_id": task_id, "status": row.status},
            )
        app.manager.cancel(task.id, tenant=tenant)
        return _public(*_load(app, task_id, tenant))

    return await anyio.to_thread.run_sync(run)


@router.delete("/{task_id}/", status_code=204, summary="Delete a correction, its upload and its outputs")
async def delete_correction(task_id: str, app: App, tenant: Tenant) -> Response:
    def run() -> None:
        engine = _engine(app)
        row = db.find(engine, task_id, tenant) or _row_of_python_submit(app, engine, task_id, tenant)
        if row is None:
            raise CorrectionNotFound(task_id)
        app.manager.cancel_if_unfinished(row.job_id, tenant=tenant)
        db.delete(engine, task_id)
        root = storage.tenant_root(app.settings.data_dir, tenant)
        # Only what this correction made goes: its listed outputs (the folder too once empty, since a
        # client may have named a folder it shares) and its own upload folder.
        with contextlib.suppress(ConveyorError, OSError):
            folder = storage.resolve_inside(root, row.output_folder, "output_folder")
            for output in (row.result or {}).get("outputs") or []:
                storage.remove_tree(storage.resolve_inside(folder, str(output.get("name")), "name"))
            if folder != root.resolve():
                folder.rmdir()
        with contextlib.suppress(ConveyorError):
            upload = storage.resolve_inside(root, f"uploads/{task_id}", "input")
            # only the correction's own folder, directly under uploads/, whatever its id looks like
            if upload.parent == (root / "uploads").resolve():
                storage.remove_tree(upload)

    await anyio.to_thread.run_sync(run)
    return Response(status_code=204)
