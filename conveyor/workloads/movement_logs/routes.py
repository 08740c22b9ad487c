"""/api/logs: seed 003's routes, with and without the trailing slash the seed writes.

``add-movement`` only appends to the queue (a Redis LPUSH, or one insert into
the queue table of the embedded default): no producer waits on the
``movement_logs`` table. Reads of stored logs are filtered by the caller's
tenant; the queue itself is one for the whole deployment, as in the seed.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio.to_thread
import sqlalchemy as sa
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from conveyor.api.deps import App, Manager, Operator, Tenant, get_app, get_caller_limited
from conveyor.api.routing import DirectRoute, SlashRouter
from conveyor.app import Conveyor
from conveyor.errors import ConveyorError, InvalidParams
from conveyor.workloads.movement_logs import db, metrics
from conveyor.workloads.movement_logs.codec import dumps
from conveyor.workloads.movement_logs.config import MovementLogsSettings
from conveyor.workloads.movement_logs.errors import InvalidJson, InvalidPage, LogQueueUnavailable
from conveyor.workloads.movement_logs.models import MovementIn, encode_item, parse_body
from conveyor.workloads.movement_logs.queue import QueueUnavailable, RedisLogQueue, SqlLogQueue
from conveyor.workloads.movement_logs.service import open_queue, redis_url_for, workload_settings

__all__ = ["router"]


@contextlib.asynccontextmanager
async def _lifespan(api: FastAPI) -> AsyncIterator[None]:
    """Runs inside the app's own lifespan (FastAPI merges a router's).

    The metrics collector joins /metrics, and on a Redis queue the producer
    route gets an asyncio client of this event loop's own, so a push costs
    no hop to a worker thread; it is closed when the app stops.
    """
    conveyor = getattr(api.state, "conveyor", None)
    client: Any = None
    if conveyor is not None:
        metrics.install(conveyor)
        wl = api.state.movement_logs_settings = workload_settings(conveyor)
        url = redis_url_for(conveyor.settings, wl)
        if url is not None:
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    api.state.movement_logs_redis = client
    try:
        yield
    finally:
        api.state.movement_logs_redis = None
        if client is not None:
            await client.aclose()


router = SlashRouter(prefix="/api/logs", tags=["movement logs"], lifespan=_lifespan)

_MOVEMENT_SCHEMA = MovementIn.model_json_schema()
_ADD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [_MOVEMENT_SCHEMA, {"type": "array", "items": _MOVEMENT_SCHEMA}]},
                "example": {
                    "user_id": "USER123",
                    "track_id": 1,
                    "bbox": [100, 100, 200, 200],
                    "state": "walking",
                    "store": "Store A",
                },
            }
        },
    }
}


def _engine(app: Conveyor) -> sa.Engine | None:
    engine: sa.Engine | None = app.store.engine
    return engine


def _queue(app: Conveyor) -> tuple[MovementLogsSettings, RedisLogQueue | SqlLogQueue]:
    wl = workload_settings(app)
    return wl, open_queue(app.settings, wl, _engine(app))


def _sql(app: Conveyor) -> sa.Engine:
    engine = _engine(app)
    if engine is None:
        raise LogQueueUnavailable(
            f"movement logs are stored in SQL; this server's store is {app.store.kind} "
            "(set CONVEYOR_DATABASE_URL to a SQLite or PostgreSQL URL)"
        )
    return engine


def _iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, tz=UTC).isoformat().replace("+00:00", "Z") if t is not None else None


async def _run(fn: Any, *args: Any) -> Any:
    """A blocking queue call in a worker thread; an unreachable backend is a 503 that says which."""
    try:
        return await anyio.to_thread.run_sync(fn, *args)
    except QueueUnavailable as e:
        raise LogQueueUnavailable(f"the movement logs queue is unavailable: {e}") from None


async def _apush(client: Any, name: str, items: list[str]) -> int:
    """One LPUSH of every item (all or none) on the app's asyncio client; the new length."""
    import redis

    try:
        return int(await client.lpush(name, *items))
    except redis.RedisError as e:
        raise LogQueueUnavailable(f"the movement logs queue is unavailable: Redis: {e}") from None


async def add_movement(request: Request) -> Response:
    """One movement event (or a JSON list of them); answers at once with the event id and the queue length.

    A JSON list of up to ``CONVEYOR_MOVEMENT_LOGS_MAX_LIST`` logs is queued all
    or none: one bad item refuses the list and nothing of it is queued.
    """
    # The hot path: the app and the caller are read here rather than through FastAPI's
    # dependencies, which run plain functions in worker threads (two thread hops a request).
    app = get_app(request)
    tenant = get_caller_limited(request, app).tenant  # the rate limit applies as on every route
    raw = await request.body()
    if not raw.strip():
        raise InvalidParams.for_field("body", "the body is empty; send a movement log as JSON")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidJson(
            f"the body is not valid JSON: {e}", details=[{"field": "body", "message": "not valid JSON", "type": "json"}]
        ) from None
    state = request.app.state
    # Read once at startup by the lifespan; an app served without it (no lifespan run) reads them here.
    wl: MovementLogsSettings = getattr(state, "movement_logs_settings", None) or workload_settings(app)
    logs, is_list = parse_body(data, wl.max_list)
    received = time.time()
    encoded = [encode_item(log, tenant, received) for log in logs]
    items = [text for _, text in encoded]
    # The lifespan made this client exactly when the queue is a Redis list (the same URL open_queue uses).
    client = getattr(state, "movement_logs_redis", None)
    if client is not None:
        length = await _apush(client, wl.queue_name, items)
    else:
        _wl, queue = _queue(app)
        length = await _run(queue.push, items, received)
    if not is_list:
        body: dict[str, Any] = {
            "status": "queued",
            "message": "Movement log added to queue",
            "event_id": encoded[0][0],
            "queue_length": length,
        }
    else:
        body = {
            "status": "queued",
            "message": f"{len(encoded)} movement logs added to queue",
            "count": len(encoded),
            "event_ids": [event_id for event_id, _ in encoded],
            "queue_length": length,
        }
    return Response(dumps(body), status_code=202, media_type="application/json")


# Served as it is (a DirectRoute): it reads and checks its own body, and answers with its own Response.
router.add_api_route(
    "/add-movement/",
    add_movement,
    methods=["POST"],
    status_code=202,
    summary="Queue a movement log (or a JSON list of them)",
    openapi_extra=_ADD_BODY,
    route_class_override=DirectRoute,
)


def _when(field: str, value: str | None) -> float | None:
    """``since`` / ``until``: ISO-8601 (UTC unless it says otherwise) or epoch seconds."""
    if value is None:
        return None
    text = value.strip()
    try:
        t = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidParams.for_field(field, "must be an ISO-8601 time or epoch seconds") from None
        t = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(t):
        raise InvalidParams.for_field(field, "must be a finite time")
    return t


def _public(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.event_id,
        "event_id": row.event_id,
        "user_id": row.user_id,
        "track_id": row.track_id,
        "bbox": row.bbox,
        "state": row.state,
        "store": row.store,
        "timestamp": _iso(row.timestamp),
        "received_at": _iso(row.received_at),
        "stored_at": _iso(row.stored_at),
    }


@router.get("/movements/", summary="Stored movement logs, newest first (DRF page shape)")
async def movements(
    request: Request,
    app: App,
    tenant: Tenant,
    page: Annotated[int, Query(ge=1, le=10_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 50,
    user_id: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    store: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    state: Annotated[str | None, Query(min_length=1, max_length=50)] = None,
    track_id: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    since: Annotated[str | None, Query(description="ISO-8601 or epoch seconds; logs at or after")] = None,
    until: Annotated[str | None, Query(description="ISO-8601 or epoch seconds; logs before")] = None,
) -> dict[str, Any]:
    """``{count, next, previous, results}`` as Django REST framework's PageNumberPagination answers."""
    flt = db.LogFilter(
        tenant=tenant,
        user_id=user_id,
        store=store,
        state=state,
        track_id=track_id,
        since=_when("since", since),
        until=_when("until", until),
    )
    engine = _sql(app)
    offset = (page - 1) * page_size
    total, rows = await anyio.to_thread.run_sync(lambda: db.list_logs(engine, flt, limit=page_size, offset=offset))
    pages = max(1, math.ceil(total / page_size))
    if page > pages:
        raise InvalidPage(page, pages)
    url = request.url
    previous = None
    if page > 1:
        previous = str(url.remove_query_params("page") if page == 2 else url.include_query_params(page=page - 1))
    return {
        "count": total,
        "next": str(url.include_query_params(page=page + 1)) if page < pages else None,
        "previous": previous,
        "results": [_public(r) for r in rows],
    }


def _batch_public(b: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": b["id"],
        "task_id": b["task_id"],
        "backend": b["backend"],
        "started_at": _iso(b["started_at"]),
        "finished_at": _iso(b["finished_at"]),
        "duration_ms": round((b["finished_at"] - b["started_at"]) * 1000, 2),
        "claimed": b["claimed"],
        "moved": b["moved"],
        "duplicates": b["duplicates"],
        "invalid": b["invalid"],
        "recovered": bool(b["recovered"]),
    }


def _status(app: Conveyor) -> dict[str, Any]:
    wl, queue = _queue(app)
    t = time.time()
    oldest = queue.oldest_enqueued_at()
    engine = _engine(app)
    history = db.batch_history(engine, 1) if engine is not None else []
    interval = wl.interval
    return {
        "queue_name": queue.name,
        "backend": queue.kind,
        "queue_length": queue.length(),
        "oldest_enqueued_at": _iso(oldest),
        "oldest_age_seconds": round(max(0.0, t - oldest), 3) if oldest is not None else None,
        "processing": queue.processing(),
        "dead_letters": queue.dead_letters(),
        "last_batch": _batch_public(history[0]) if history else None,
        "batch_size": wl.batch_size,
        "interval_seconds": interval,
        # The scheduler fires on multiples of the interval (conveyor.scheduler.PeriodicJob).
        "next_run_at": _iso((int(t // interval) + 1) * interval) if app.settings.scheduler else None,
    }


@router.get("/queue-status/", summary="Queue length, oldest item, in-flight items, last batch, next run (operators)")
async def queue_status(app: App, _operator: Operator) -> dict[str, Any]:
    """The one queue of the whole deployment: like /api/v1/queues, an operator's view (local mode included)."""
    status: dict[str, Any] = await _run(_status, app)
    return status


@router.get("/batches/", summary="The latest batches: when, how many, how long (operators)")
async def batches(app: App, _operator: Operator, limit: Annotated[int, Query(ge=1, le=500)] = 20) -> dict[str, Any]:
    engine = _sql(app)
    rows = await anyio.to_thread.run_sync(db.batch_history, engine, limit)
    return {"count": len(rows), "results": [_batch_public(b) for b in rows]}


@router.post("/process/", status_code=202, summary="Run a batch now")
async def process(
    app: App,
    manager: Manager,
    tenant: Tenant,
    max_batches: Annotated[int, Query(ge=1, le=10_000, description="batches in this run")] = 1,
    batch_size: Annotated[int | None, Query(ge=1, le=100_000, description="logs per batch")] = None,
) -> JSONResponse:
    """Submits ``logs.process_batch``; follow it at ``/api/v1/tasks/{task_id}``."""
    params: dict[str, Any] = {"max_batches": max_batches}
    if batch_size is not None:
        params["batch_size"] = batch_size
    record = await anyio.to_thread.run_sync(lambda: manager.submit_task("logs.process_batch", params, tenant=tenant))
    return JSONResponse(
        {
            "status": record.state.value,
            "task_id": record.id,
            "message": "Log processing started",
            "status_url": f"/api/v1/tasks/{record.id}",
        },
        status_code=202,
    )


@router.post("/clear-queue/", summary="Drop every queued movement log (operators only)")
async def clear_queue(app: App, _operator: Operator) -> dict[str, Any]:
    _wl, queue = _queue(app)
    dropped: int = await _run(queue.clear)
    return {"status": "cleared", "message": f"Cleared {dropped} movement logs from the queue", "cleared": dropped}


@router.get("/test-celery/", summary="Round-trip a task through the executor and time it")
async def celery_round_trip(
    app: App,
    manager: Manager,
    tenant: Tenant,
    timeout: Annotated[float, Query(gt=0, le=60, description="seconds to wait for a worker")] = 10.0,
) -> JSONResponse:
    """``system.ping`` through whichever executor runs tasks (Celery, or the local pool in embedded mode)."""
    t0 = time.perf_counter()
    record = await anyio.to_thread.run_sync(
        lambda: manager.submit_task("system.ping", {"payload": "test-celery"}, tenant=tenant)
    )
    try:
        done = await anyio.to_thread.run_sync(lambda: manager.wait(record.id, tenant=tenant, timeout=timeout))
    except (ConveyorError, TimeoutError):  # no worker answered in time: the 503 below, not a 500
        done = None
    elapsed = round((time.perf_counter() - t0) * 1000, 2)
    answered = done is not None and done.state.value == "SUCCESS"
    result = done.result if answered and done is not None else None
    body = {
        "celery": answered,
        "status": "ok" if answered else (done.state.value if done is not None and done.finished else "timeout"),
        "executor": app.settings.executor,
        "task_id": record.id,
        "round_trip_ms": elapsed,
        "worker": {"host": result.get("host"), "pid": result.get("pid")} if isinstance(result, dict) else None,
        "message": "A worker answered" if answered else f"No worker answered within {timeout:g} s",
    }
    return JSONResponse(body, status_code=200 if answered else 503)


def _health(app: Conveyor) -> dict[str, Any]:
    report = app.health()
    try:
        _wl, queue = _queue(app)
        queue.ping()
        queue_ok = True
    except (QueueUnavailable, ConveyorError):
        queue_ok = False
    database = report["database"]["status"] == "ok"
    celery = report["executor"]["status"] == "ok" and report["workers"]["status"] == "ok"
    if not queue_ok:
        overall = "unhealthy"  # producers cannot queue logs
    elif database and celery:
        overall = "healthy"
    else:
        overall = "degraded"  # logs are queued and wait for the worker or the database
    return {"redis": queue_ok, "celery": celery, "database": database, "overall_status": overall}


@router.get("/health/", summary="Health: redis (the log queue), celery (the executor), database")
async def health(app: App) -> JSONResponse:
    body: dict[str, Any] = await anyio.to_thread.run_sync(_health, app)
    return JSONResponse(body, status_code=503 if body["overall_status"] == "unhealthy" else 200)
