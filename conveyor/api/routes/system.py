"""Health, queues, workers, metrics, and a live stream of many tasks at once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Query, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse

from conveyor.api.deps import App, Operator, Who, get_caller, stream_slot
from conveyor.api.routing import SlashRouter
from conveyor.api.schemas import EVENT_STREAM, QueuePublic, QueuesPublic, TaskStatus, iso
from conveyor.app import Conveyor
from conveyor.errors import ConveyorError, ExecutorError
from conveyor.hub import Subscription
from conveyor.records import TaskRecord

__all__ = ["router"]

router = SlashRouter(tags=["system"])

MAX_WATCHED = 200
#: how often the many-task stream re-reads its unfinished tasks when no change in this process woke it
EVENTS_POLL = 5.0
#: ...and when tasks run in other processes whose changes no notifier carries here
EVENTS_REMOTE_POLL = 1.0


@router.get("/livez", summary="Liveness: the process answers (reveals nothing else)")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health", summary="Database, executor (and broker, workers) health")
async def health(request: Request, app: App) -> JSONResponse:
    """200 while the service can take work (healthy or degraded), 503 when it cannot.

    An operator (or the local caller) sees every part with its error; anyone
    else sees the same statuses without error texts, which may name internal
    hosts.
    """
    report = await anyio.to_thread.run_sync(app.health)
    code = 503 if report["overall_status"] == "unhealthy" else 200
    if not _is_operator(request, app):
        report = _without_errors(report)
    return JSONResponse(report, status_code=code)


def _is_operator(request: Request, app: Conveyor) -> bool:
    try:
        return get_caller(request, app).operator
    except ConveyorError:
        return False


def _without_errors(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_errors(v) for k, v in value.items() if k != "error"}
    return value


@router.get("/api/v1/queues", response_model=QueuesPublic, summary="Depth and counts by state, per queue (operators)")
async def queues(app: App, _operator: Operator) -> QueuesPublic:
    """Per queue: the store's counts by state, and on Celery the broker's own message count."""
    stats = await anyio.to_thread.run_sync(app.manager.queue_stats)
    depths = await anyio.to_thread.run_sync(_broker_depths, app)
    app.metrics.set_queues(stats, depths)
    known = {q.queue for q in stats}
    data = [QueuePublic.of(q, depths.get(q.queue) if depths is not None else None) for q in stats]
    data += [
        QueuePublic(queue=name, depth=0, counts={}, broker_depth=n)
        for name, n in sorted((depths or {}).items())
        if name not in known and n
    ]
    return QueuesPublic(data=data, count=len(data))


def _broker_depths(app: Conveyor) -> dict[str, int] | None:
    """The broker's queue depths, or None without a broker (local) or while it is down."""
    try:
        return app.executor.broker_depths()
    except ExecutorError:
        return None


@router.get("/api/v1/workers", summary="Workers: alive, active and reserved tasks, processed counts (operators)")
async def workers(app: App, _operator: Operator) -> dict[str, Any]:
    executor = app.executor
    listing = executor.workers()
    return {"executor": executor.name, "stats": executor.stats(), "data": listing, "count": len(listing)}


@router.get("/metrics", summary="Prometheus metrics (operators: scrape with an operator key)", response_class=Response)
async def metrics(app: App, _operator: Operator) -> Response:
    stats = await anyio.to_thread.run_sync(app.manager.queue_stats)
    app.metrics.set_queues(stats, await anyio.to_thread.run_sync(_broker_depths, app))
    return Response(app.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/api/v1/events", summary="Live changes of several tasks (Server-Sent Events)", responses=EVENT_STREAM)
async def many_events(
    request: Request,
    app: App,
    caller: Who,
    ids: Annotated[str, Query(description="comma-separated task ids (at most 200)")],
) -> EventSourceResponse:
    """A ``progress`` event each time one of the watched tasks changes; the stream stays open.

    The watched records are read once when the stream opens; after that the
    hub names the watched tasks that changed and only those are read again,
    so a stream costs its own tasks' changes, not every change in the process.
    Changes made by another process (a Celery worker, another API process)
    reach the hub through the deployment's notifier; unfinished watched tasks
    are also re-read on a slow timer.
    """
    watched = list(dict.fromkeys(i.strip() for i in ids.split(",") if i.strip()))[:MAX_WATCHED]
    tenant = caller.tenant
    poll = EVENTS_POLL if app.hears_every_change else EVENTS_REMOTE_POLL
    release = stream_slot(request, caller)

    async def stream() -> AsyncIterator[dict[str, Any]]:
        subscription = app.hub.subscribe(watched)
        try:
            async for event in follow(subscription):
                yield event
        finally:
            subscription.close()
            release()

    async def follow(subscription: Subscription) -> AsyncIterator[dict[str, Any]]:
        seen: dict[str, tuple[Any, ...]] = {}
        finished: set[str] = set()
        to_read = watched
        while True:
            records = await anyio.to_thread.run_sync(app.store.get_many, to_read) if to_read else []
            for r in records:
                if r.tenant != tenant:
                    continue
                if r.finished:
                    finished.add(r.id)
                key = (r.state, r.progress, r.message)
                if seen.get(r.id) != key:
                    seen[r.id] = key
                    yield {"event": "progress", "data": _many_event_json(r)}
            if await request.is_disconnected():
                return
            changed = await subscription.changed(poll)
            # woken: the tasks that changed; timed out: the unfinished ones, which another process may move
            to_read = sorted(changed) if changed else [i for i in watched if i not in finished]

    return EventSourceResponse(stream(), ping=15, headers={"Cache-Control": "no-cache"})


def _many_event_json(r: TaskRecord) -> str:
    data = TaskStatus.of(r).model_dump()
    data.update(
        type=r.type,
        attempts=r.attempts,
        updated_at=iso(r.updated_at),
        started_at=iso(r.started_at),
        finished_at=iso(r.finished_at),
    )
    return json.dumps(data)
