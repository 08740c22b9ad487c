"""Seed 002's HTTP and WebSocket routes: resources, attempts, impressions, maintenance triggers.

    POST /api/resources                       {title, reference_text} -> {id, ...}
    GET  /api/resources                       the tenant's resources
    GET  /api/resources/{id}                  one resource with its rating and impressions
    GET  /api/resources/{id}/audio            its reference reading (WAV)
    POST /api/resources/{id}/impressions      count one (or ``count``) impressions
    POST /api/resources/{id}/attempts         {audio_chunks, user_name} -> the task's id
    GET  /api/resources/{id}/attempts         its attempts (``?user_name=`` filters)
    GET  /api/attempts/{attempt_id}           one attempt with transcript and word timings
    POST /api/tasks/rating/recalculate        {resource_id?} -> calculate_rating / calculate_all_ratings
    POST /api/tasks/impressions/sync          -> sync_impressions_from_redis
    POST /api/tasks/cleanup/sessions          -> cleanup_sessions
    WS   /api/speech/stream/{resource_id}     audio chunks in, progress and transcript out

``GET /api/tasks/{task_id}/status`` and ``POST /api/tasks/{task_id}/cancel``
are the core's; the task's progress is also on SSE at
``/api/v1/tasks/{task_id}/events``.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio.to_thread
import sqlalchemy as sa
from fastapi import Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from conveyor.api.deps import App, Manager, Operator, Tenant
from conveyor.api.routes.tasks import read_json_object
from conveyor.api.routing import SlashRouter
from conveyor.app import Conveyor
from conveyor.errors import InvalidParams
from conveyor.records import TaskRecord, new_task_id
from conveyor.workloads.speech import db
from conveyor.workloads.speech.deps import speech_engine, speech_settings
from conveyor.workloads.speech.errors import AttemptNotFound, AudioNotFound, ResourceNotFound
from conveyor.workloads.speech.stream import router as stream_router

__all__ = ["router"]

router = SlashRouter(tags=["speech"])

M = TypeVar("M", bound=BaseModel)


# -- plumbing --------------------------------------------------------------------


def _validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_context=False)
        ]
        raise InvalidParams(f"Invalid request: {', '.join(d['field'] for d in details)}", details=details) from None


async def _body(request: Request, model: type[M], *, optional: bool = False) -> M:
    if optional and not (await request.body()).strip():
        return model.model_validate({})
    return _validate(model, await read_json_object(request))


def _resource(app: Conveyor, resource_id: str, tenant: str) -> sa.Row[Any]:
    row = db.find_resource(speech_engine(app), resource_id, tenant)
    if row is None:
        raise ResourceNotFound(resource_id)
    return row


def _resource_json(row: sa.Row[Any], impressions: int | None = None, pending: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "title": row.title,
        "reference_text": row.reference_text,
        "has_audio": bool(row.audio_path),
        "audio_task_id": row.audio_task_id,
        "rating": row.rating,
        "average_score": row.average_score,
        "attempts_count": row.attempts_count,
        "rating_updated_at": row.rating_updated_at,
        "created_at": row.created_at,
    }
    if impressions is not None:
        out["impressions"] = impressions
    if pending is not None:
        out["impressions_pending"] = pending
    return out


def _attempt_json(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "task_id": row.id,
        "resource_id": row.resource_id,
        "user_name": row.user_name,
        "status": row.status,
        "transcript": row.transcript,
        "words": row.words or [],
        "wer": row.wer,
        "score": row.score,
        "audio_seconds": row.audio_seconds,
        "recognizer": row.recognizer,
        "error_message": row.error_message,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def _accepted(record: TaskRecord) -> JSONResponse:
    return JSONResponse(
        {
            "task_id": record.id,
            "task_type": record.type,
            "status": record.state.value,
            "executor": record.executor,
            "status_url": f"/api/tasks/{record.id}/status",
        },
        status_code=202,
    )


# -- resources ---------------------------------------------------------------------


class ResourceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=300)
    reference_text: str = Field(min_length=1, max_length=100_000)
    #: make the reference reading with ``speech.synthesize`` (flite by default)
    synthesize: bool = True
    voice: str | None = Field(default=None, max_length=40)

    @field_validator("title", "reference_text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


@router.post("/api/resources", status_code=201, summary="Create a resource to read aloud")
async def create_resource(request: Request, app: App, manager: Manager, tenant: Tenant) -> JSONResponse:
    """``{title, reference_text}``; answers with the resource's ``id`` (and the task making its audio)."""
    body = await _body(request, ResourceCreate)
    settings = speech_settings(app)
    if len(body.reference_text) > settings.max_reference_chars:
        raise InvalidParams.for_field("reference_text", f"must be at most {settings.max_reference_chars} characters")
    engine = speech_engine(app)
    resource_id = new_task_id()
    await anyio.to_thread.run_sync(
        lambda: db.create_resource(
            engine, id=resource_id, tenant=tenant, title=body.title, reference_text=body.reference_text
        )
    )
    if body.synthesize:
        params = {"text": body.reference_text, "voice": body.voice, "resource_id": resource_id}
        record = await manager.aio.submit_task("speech.synthesize", params, tenant=tenant)
        await anyio.to_thread.run_sync(lambda: db.update_resource(engine, resource_id, audio_task_id=record.id))
    row = await anyio.to_thread.run_sync(lambda: db.find_resource(engine, resource_id))
    assert row is not None
    return JSONResponse(_resource_json(row), status_code=201)


@router.get("/api/resources", summary="The caller's resources, newest first")
async def list_resources(
    app: App,
    tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,  # past it a database integer overflows (a 500)
) -> dict[str, Any]:
    engine = speech_engine(app)
    rows, total = await anyio.to_thread.run_sync(lambda: db.list_resources(engine, tenant, limit=limit, offset=offset))
    return {"data": [_resource_json(r) for r in rows], "count": total}


@router.get("/api/resources/{resource_id}", summary="One resource, with its rating and impressions")
async def get_resource(resource_id: str, app: App, tenant: Tenant) -> dict[str, Any]:
    from conveyor.workloads.speech.impressions import counter_for

    engine = speech_engine(app)
    settings = speech_settings(app)

    def read() -> dict[str, Any]:
        row = _resource(app, resource_id, tenant)
        pending = counter_for(engine, settings.redis_url).pending(resource_id)
        return _resource_json(row, db.impressions_of(engine, resource_id), pending)

    return await anyio.to_thread.run_sync(read)


@router.get("/api/resources/{resource_id}/audio", summary="The resource's reference reading (WAV)")
async def get_resource_audio(resource_id: str, app: App, tenant: Tenant) -> FileResponse:
    row = await anyio.to_thread.run_sync(lambda: _resource(app, resource_id, tenant))
    if not row.audio_path or not Path(row.audio_path).is_file():
        raise AudioNotFound(resource_id)
    return FileResponse(row.audio_path, media_type="audio/wav", filename=f"{resource_id}.wav")


class ImpressionPost(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = Field(default=1, ge=1, le=10_000)


@router.post("/api/resources/{resource_id}/impressions", status_code=202, summary="Count impressions")
async def post_impression(resource_id: str, request: Request, app: App, tenant: Tenant) -> JSONResponse:
    """Adds to the counter at once; ``/api/tasks/impressions/sync`` (or the periodic job) moves it into SQL."""
    from conveyor.workloads.speech.impressions import counter_for

    body = await _body(request, ImpressionPost, optional=True)
    engine = speech_engine(app)
    settings = speech_settings(app)

    def count() -> None:
        _resource(app, resource_id, tenant)
        counter_for(engine, settings.redis_url).add(resource_id, body.count)

    await anyio.to_thread.run_sync(count)
    return JSONResponse({"resource_id": resource_id, "counted": body.count}, status_code=202)


# -- attempts ------------------------------------------------------------------------


class AttemptCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    audio_chunks: list[str] = Field(min_length=1)
    user_name: str = Field(default="anonymous", min_length=1, max_length=200)

    @field_validator("audio_chunks")
    @classmethod
    def _base64(cls, chunks: list[str]) -> list[str]:
        # Refused here with 422 rather than accepted and failed by the task.
        for i, chunk in enumerate(chunks):
            text = chunk.split(",", 1)[1] if chunk.startswith("data:") and "," in chunk else chunk
            try:
                base64.b64decode(text, validate=True)
            except ValueError:  # binascii.Error is one
                raise ValueError(f"chunk {i} is not valid base64") from None
        return chunks


@router.post("/api/resources/{resource_id}/attempts", status_code=202, summary="Submit a reading (base64 chunks)")
async def create_attempt(
    resource_id: str, request: Request, app: App, manager: Manager, tenant: Tenant
) -> JSONResponse:
    body = await _body(request, AttemptCreate)
    await anyio.to_thread.run_sync(lambda: _resource(app, resource_id, tenant))
    params = {"resource_id": resource_id, "audio_chunks": body.audio_chunks, "user_name": body.user_name}
    record = await manager.aio.submit_task("speech.process_speak_audio", params, tenant=tenant)
    return _accepted(record)


@router.get("/api/resources/{resource_id}/attempts", summary="A resource's attempts, newest first")
async def list_attempts(
    resource_id: str,
    app: App,
    tenant: Tenant,
    user_name: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,  # past it a database integer overflows (a 500)
) -> dict[str, Any]:
    engine = speech_engine(app)

    def read() -> dict[str, Any]:
        _resource(app, resource_id, tenant)
        rows, total = db.attempts_of(engine, resource_id, user_name=user_name, limit=limit, offset=offset)
        return {"data": [_attempt_json(r) for r in rows], "count": total}

    return await anyio.to_thread.run_sync(read)


@router.get("/api/attempts/{attempt_id}", summary="One attempt: transcript, word timings, score")
async def get_attempt(attempt_id: str, app: App, tenant: Tenant) -> dict[str, Any]:
    row = await anyio.to_thread.run_sync(lambda: db.attempt(speech_engine(app), attempt_id, tenant))
    if row is None:
        raise AttemptNotFound(attempt_id)
    return _attempt_json(row)


# -- maintenance triggers (seed 002's paths) -----------------------------------------------


class Recalculate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: one resource (calculate_rating, in-process) or, when absent, all of the tenant's (calculate_all_ratings)
    resource_id: str | None = Field(default=None, min_length=1, max_length=64)


@router.post("/api/tasks/rating/recalculate", status_code=202, summary="Recalculate ratings")
async def recalculate_ratings(request: Request, app: App, manager: Manager, tenant: Tenant) -> JSONResponse:
    body = await _body(request, Recalculate, optional=True)
    if body.resource_id is not None:
        resource_id = body.resource_id
        await anyio.to_thread.run_sync(lambda: _resource(app, resource_id, tenant))
        record = await manager.aio.submit_task("speech.calculate_rating", {"resource_id": resource_id}, tenant=tenant)
    else:
        record = await manager.aio.submit_task("speech.calculate_all_ratings", {}, tenant=tenant)
    return _accepted(record)


@router.post("/api/tasks/impressions/sync", status_code=202, summary="Move impression counters into SQL (operator)")
async def sync_impressions(app: App, manager: Manager, operator: Operator) -> JSONResponse:
    """Every tenant's counters move, so this is an operator's action (open in local mode)."""
    speech_engine(app)
    record = await manager.aio.submit_task("speech.sync_impressions_from_redis", {}, tenant=operator.tenant)
    return _accepted(record)


@router.post("/api/tasks/cleanup/sessions", status_code=202, summary="Delete expired practice sessions (operator)")
async def cleanup_sessions(app: App, manager: Manager, operator: Operator) -> JSONResponse:
    """Every tenant's expired sessions go, so this is an operator's action (open in local mode)."""
    speech_engine(app)
    record = await manager.aio.submit_task("speech.cleanup_sessions", {}, tenant=operator.tenant)
    return _accepted(record)


# The practice stream lives in its own module; its route is served under this router.
router.include_router(stream_router)
