"""The practice stream: ``WS /api/speech/stream/{resource_id}``, audio chunks in, progress and transcript out."""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any, cast

import anyio.to_thread
import sqlalchemy as sa
from fastapi import Request, WebSocket, WebSocketDisconnect

from conveyor.api import tokens
from conveyor.api.deps import get_caller_limited
from conveyor.api.routing import SlashRouter
from conveyor.app import Conveyor
from conveyor.errors import AuthenticationError, ConveyorError
from conveyor.records import FINAL_STATES, TaskRecord
from conveyor.workloads.speech import db
from conveyor.workloads.speech.deps import speech_engine, speech_settings

__all__ = ["router"]

router = SlashRouter(tags=["speech"])

#: how often a stream re-reads its task when nothing in this process woke it (Celery runs elsewhere)
STREAM_POLL = 0.1


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
    # Subscribed before the first read: a change between a read and the next wait is kept for it.
    with contextlib.closing(app.hub.subscribe([task_id])) as changes:
        while True:
            record = await app.manager.aio.get(task_id, tenant=tenant)
            key = (record.state, record.progress, record.message)
            if key != last:
                await websocket.send_json(_task_message(record))
                last = key
            if record.state in FINAL_STATES:
                return record
            await changes.changed(STREAM_POLL)


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
    settings = speech_settings(app)
    try:
        try:
            tenant = _socket_tenant(websocket, app)
            engine = speech_engine(app)
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
