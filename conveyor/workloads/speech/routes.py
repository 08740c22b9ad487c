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
import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import anyio.to_thread
import sqlalchemy as sa
from fastapi import Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from conveyor.api import tokens
from conveyor.api.deps import App, Manager, Operator, Tenant, get_caller_limited
from conveyor.api.routes.tasks import read_json_object
from conveyor.api.routing import SlashRouter
from conveyor.app import Conveyor
from conveyor.errors import AuthenticationError, ConveyorError, InvalidParams
from conveyor.records import FINAL_STATES, TaskRecord, new_task_id
from conveyor.workloads.speech import db
from conveyor.workloads.speech.config import SpeechSettings
from conveyor.workloads.speech.errors import AttemptNotFound, AudioNotFound, ResourceNotFound, SpeechUnavailable

__all__ = ["router"]

router = SlashRouter(tags=["speech"])

M = TypeVar("M", bound=BaseModel)

#: how often a stream re-reads its task when nothing in this process woke it (Celery runs elsewhere)
STREAM_POLL = 0.1


# -- plumbing --------------------------------------------------------------------


def _engine(app: Conveyor) -> sa.Engine:
    engine: sa.Engine | None = app.store.engine
    if engine is None:
        raise SpeechUnavailable(
            f"the speech workload keeps its tables in SQL; this server's store is {app.store.kind} "
            "(set CONVEYOR_DATABASE_URL to a SQLite or PostgreSQL URL)"
        )
    return engine


def _settings(app: Conveyor) -> SpeechSettings:
    settings: SpeechSettings = app.workload_settings("speech")
    return settings


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
    row = db.find_resource(_engine(app), resource_id, tenant)
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
    settings = _settings(app)
    if len(body.reference_text) > settings.max_reference_chars:
        raise InvalidParams.for_field("reference_text", f"must be at most {settings.max_reference_chars} characters")
    engine = _engine(app)
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
    engine = _engine(app)
    rows, total = await anyio.to_thread.run_sync(lambda: db.list_resources(engine, tenant, limit=limit, offset=offset))
    return {"data": [_resource_json(r) for r in rows], "count": total}


@router.get("/api/resources/{resource_id}", summary="One resource, with its rating and impressions")
async def get_resource(resource_id: str, app: App, tenant: Tenant) -> dict[str, Any]:
    from conveyor.workloads.speech.impressions import counter_for

    engine = _engine(app)
    settings = _settings(app)

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
    engine = _engine(app)
    settings = _settings(app)

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
    engine = _engine(app)

    def read() -> dict[str, Any]:
        _resource(app, resource_id, tenant)
        rows, total = db.attempts_of(engine, resource_id, user_name=user_name, limit=limit, offset=offset)
        return {"data": [_attempt_json(r) for r in rows], "count": total}

    return await anyio.to_thread.run_sync(read)


@router.get("/api/attempts/{attempt_id}", summary="One attempt: transcript, word timings, score")
async def get_attempt(attempt_id: str, app: App, tenant: Tenant) -> dict[str, Any]:
    row = await anyio.to_thread.run_sync(lambda: db.attempt(_engine(app), attempt_id, tenant))
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
    _engine(app)
    record = await manager.aio.submit_task("speech.sync_impressions_from_redis", {}, tenant=operator.tenant)
    return _accepted(record)


@router.post("/api/tasks/cleanup/sessions", status_code=202, summary="Delete expired practice sessions (operator)")
async def cleanup_sessions(app: App, manager: Manager, operator: Operator) -> JSONResponse:
    """Every tenant's expired sessions go, so this is an operator's action (open in local mode)."""
    _engine(app)
    record = await manager.aio.submit_task("speech.cleanup_sessions", {}, tenant=operator.tenant)
    return _accepted(record)


# -- the practice stream -------------------------------------------------------------------


class _StreamError(Exception):
    def __init__(self, code: str, message: str, close: int | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close
        self.field = field


def _task_message(record: TaskRecord) -> dict[str, Any]:
    return {
        "type": "progress",
        "task_id": record.id,
        "status": record.state.value,
        "progress": record.progress,
        "message": record.message,
        "executor": record.executor,
    }


def _final_message(record: TaskRecord) -> dict[str, Any]:
    if record.state.value == "SUCCESS" and isinstance(record.result, dict):
        return {"type": "result", "task_id": record.id, "status": "SUCCESS", **record.result}
    error = (record.error or {}).get("message") or record.message
    return {
        "type": "error",
        "code": "task_failed",
        "task_id": record.id,
        "status": record.state.value,
        "message": error,
    }


def _parse_frame(message: Mapping[str, Any]) -> tuple[str, Any]:
    """A frame as (kind, value): ("audio", base64 text), ("end", None), ("start", user_name), ..."""
    raw = message.get("bytes")
    if raw is not None:
        return "audio", base64.b64encode(raw).decode()
    text = message.get("text")
    if text is None:
        return "ignore", None
    stripped = text.strip()
    if stripped.lower() in ("end", "stop", "done"):
        return "end", None
    if not stripped.startswith("{"):
        return "audio", stripped  # a bare base64 chunk, as the seed's front end sent them
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError as e:
        raise _StreamError("bad_request", f"malformed JSON frame: {e.msg}") from None
    if not isinstance(data, dict):
        raise _StreamError("bad_request", "a JSON frame must be an object")
    kind = data.get("type") or data.get("event") or ("audio" if "data" in data or "audio" in data else None)
    if kind in ("audio", "chunk", "audio_chunk"):
        chunk = data.get("data", data.get("audio", data.get("chunk")))
        if not isinstance(chunk, str) or not chunk:
            raise _StreamError("invalid_params", "an audio frame needs 'data': a base64 string", field="data")
        return "audio", chunk
    if kind in ("end", "stop", "done"):
        return "end", data.get("user_name")
    if kind == "start":
        return "start", data.get("user_name")
    if kind == "ping":
        return "ping", None
    raise _StreamError("bad_request", f"unknown frame type {kind!r}; send audio, end, start or ping")


async def _follow(websocket: WebSocket, app: Conveyor, task_id: str, tenant: str) -> TaskRecord:
    """Push the task's progress on the socket until it finishes; returns its last record."""
    last: tuple[Any, ...] | None = None
    while True:
        record = await app.manager.aio.get(task_id, tenant=tenant)
        key = (record.state, record.progress, record.message)
        if key != last:
            await websocket.send_json(_task_message(record))
            last = key
        if record.state in FINAL_STATES:
            return record
        await app.hub.wait_async(task_id, STREAM_POLL)


class _KeyOnly:
    """What ``get_caller`` reads of a request, carrying a key given in a WebSocket's URL as a header."""

    def __init__(self, websocket: WebSocket, key: str) -> None:
        self.headers = {"x-api-key": key}
        self.query_params: dict[str, str] = {}
        self.url = websocket.url
        self.app = websocket.app


def _socket_tenant(websocket: WebSocket, app: Conveyor) -> str:
    """The caller's tenant: the usual headers, or in the URL (a browser's WebSocket sends no headers)
    ``?stream_token=`` from ``POST /api/v1/session/stream-token``, or ``?api_key=`` for older clients."""
    if websocket.headers.get("authorization") or websocket.headers.get("x-api-key"):
        return get_caller_limited(cast(Request, websocket), app).tenant
    token = websocket.query_params.get("stream_token")
    if token and (app.settings.api_keys or app.settings.operator_keys):
        claims = tokens.verify(app.settings, token)
        if claims is None:
            raise AuthenticationError("the stream token is not valid or has expired; ask for a new one")
        return claims[0]
    key = websocket.query_params.get("api_key")
    if key:
        return get_caller_limited(cast(Request, _KeyOnly(websocket, key)), app).tenant
    return get_caller_limited(cast(Request, websocket), app).tenant


@router.websocket("/api/speech/stream/{resource_id}")
async def speech_stream(websocket: WebSocket, resource_id: str) -> None:
    """Audio chunks in (binary frames, bare base64 text, or ``{"type": "audio", "data": ...}``);
    ``end`` submits ``process_speak_audio``; progress and the transcript come back on the socket.

    ``?user_name=`` (or ``{"type": "start", "user_name": ...}``) names the reader; the usual
    headers, ``?stream_token=`` or ``?api_key=`` authenticate. The socket stays open for further readings.
    """
    from conveyor.aio import get_task_manager

    app: Conveyor = websocket.app.state.conveyor
    await websocket.accept()
    session_id: str | None = None
    engine: sa.Engine | None = None
    settings = _settings(app)
    try:
        try:
            tenant = _socket_tenant(websocket, app)
            engine = _engine(app)
            resource = await anyio.to_thread.run_sync(lambda: db.find_resource(engine, resource_id, tenant))
        except ConveyorError as e:
            close = {401: 4401, 429: 4429}.get(e.status_code, 4503)
            raise _StreamError(e.code, e.message, close=close) from None
        if resource is None:
            raise _StreamError("resource_not_found", f"No resource with id {resource_id!r}", close=4404)
        user_name = (websocket.query_params.get("user_name") or "anonymous")[:200]
        session_id = str(uuid.uuid4())
        await anyio.to_thread.run_sync(
            lambda: db.create_session(
                engine,
                session_id,
                ttl=settings.session_ttl_seconds,
                tenant=tenant,
                resource_id=resource_id,
                user_name=user_name,
            )
        )
        await websocket.send_json({"type": "ready", "session_id": session_id, "resource_id": resource_id})
        manager = get_task_manager(app)
        max_bytes = int(settings.max_audio_mb * 1024 * 1024)
        chunks: list[str] = []
        size = 0
        last_touch = time.monotonic()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            try:
                kind, value = _parse_frame(message)
            except _StreamError as e:
                await websocket.send_json({"type": "error", "code": e.code, "message": e.message, "field": e.field})
                continue
            if kind == "audio":
                chunks.append(value)
                size += len(value) * 3 // 4
                if size > max_bytes or len(chunks) > settings.max_chunks:
                    raise _StreamError(
                        "payload_too_large",
                        f"the audio passed {settings.max_audio_mb:g} MiB or {settings.max_chunks} chunks",
                        close=1009,
                    )
            elif kind == "start" and isinstance(value, str) and value.strip():
                user_name = value.strip()[:200]
            elif kind == "ping":
                await websocket.send_json({"type": "pong"})
            elif kind == "end":
                if isinstance(value, str) and value.strip():
                    user_name = value.strip()[:200]
                if not chunks:
                    await websocket.send_json(
                        {
                            "type": "error",
                            "code": "invalid_params",
                            "field": "audio_chunks",
                            "message": "no audio received before end",
                        }
                    )
                    continue
                try:
                    task_id = await manager.submit("process_speak_audio", resource_id, chunks, user_name, tenant=tenant)
                except ConveyorError as e:
                    await websocket.send_json(
                        {"type": "error", "code": e.code, "message": e.message, "details": e.details}
                    )
                    chunks, size = [], 0
                    continue
                await websocket.send_json({"type": "accepted", "task_id": task_id, "chunks": len(chunks)})
                chunks, size = [], 0
                await websocket.send_json(_final_message(await _follow(websocket, app, task_id, tenant)))
            if time.monotonic() - last_touch > 30:
                last_touch = time.monotonic()
                await anyio.to_thread.run_sync(
                    lambda: db.touch_session(engine, session_id, ttl=settings.session_ttl_seconds)
                )
    except _StreamError as e:
        await websocket.send_json({"type": "error", "code": e.code, "message": e.message, "field": e.field})
        await websocket.close(code=e.close or 1008)
    except (WebSocketDisconnect, OSError):
        # The reader went away (OSError: the server's send found the socket closed). A submitted
        # reading still finishes: its transcript and score are on the attempt.
        pass
    finally:
        if session_id is not None and engine is not None:
            sid, eng = session_id, engine
            # Shielded: a server cancelling the handler of a dropped socket still closes its session.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(
                    lambda: db.touch_session(eng, sid, ttl=settings.session_ttl_seconds, status="closed")
                )
