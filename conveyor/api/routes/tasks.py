"""/api/v1/tasks: submit, status, result, cancel, retry, list, live events."""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse
from starlette.datastructures import FormData, UploadFile

from conveyor.api.deps import App, Caller, Manager, Tenant, Who, get_app, get_caller_limited, stream_slot
from conveyor.api.guard import check_text
from conveyor.api.routing import SlashRouter, direct
from conveyor.api.schemas import (
    COMMON_ERRORS,
    EVENT_STREAM,
    NOT_FOUND,
    SUBMIT_ERRORS,
    SUBMIT_REQUEST,
    TaskCreated,
    TaskPublic,
    TaskResult,
    TasksPublic,
    TaskStatus,
    iso,
    json_response,
    public_error,
)
from conveyor.api.shared_reads import SharedReads
from conveyor.errors import InvalidParams, RequestError, TaskNotFound, UnknownTaskType, UnsupportedMediaType
from conveyor.records import Status, TaskRecord
from conveyor.stores.base import TaskQuery

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.hub import Subscription

__all__ = [
    "SubmitHook",
    "has_submit_hook",
    "legacy_router",
    "params_and_options",
    "read_json_object",
    "router",
    "submit_from_body",
    "submit_hook",
    "task_type_of",
]

#: ``hook(app, task_type, body, form=..., body_bytes=...) -> body``: a task type that reads its
#: own submit body (files of a multipart form, its own size limits and cross-field checks)
SubmitHook = Callable[..., Awaitable[dict[str, Any]]]
_submit_hooks: dict[str, SubmitHook] = {}


def submit_hook(*task_types: str) -> Callable[[SubmitHook], SubmitHook]:
    """Register ``hook`` for the named task types (canonical names) on ``POST /api/v1/tasks[/submit/]``."""

    def register(hook: SubmitHook) -> SubmitHook:
        for name in task_types:
            _submit_hooks[name] = hook
        return hook

    return register


router = SlashRouter(prefix="/api/v1/tasks", tags=["tasks"], responses={**COMMON_ERRORS, **NOT_FOUND})

#: body keys that are submit options, not params of the task
OPTION_KEYS = frozenset({"task_type", "type", "params", "priority", "queue", "idempotency_key", "delay"})
#: how often a live stream re-reads the store when nothing in this process woke it
STREAM_POLL = 0.5
#: ...and when the task runs in another process whose writes no notifier carries here
REMOTE_POLL = 0.1


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400/415 that says what is wrong with it."""
    content_type = request.headers.get("content-type", "")
    if content_type and "json" not in content_type.lower():
        raise UnsupportedMediaType(
            f"send the body as application/json, not {content_type.split(';')[0]}",
            details={"content_type": content_type},
        )
    raw = await request.body()
    if not raw.strip():
        raise RequestError("the request body is empty; send a JSON object")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise RequestError(
            f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}",
            details={"line": e.lineno, "column": e.colno, "position": e.pos},
        ) from None
    except (ValueError, RecursionError) as e:  # 5,000-digit numbers, nesting bombs
        raise RequestError(f"unreadable JSON: {type(e).__name__}: {str(e)[:120]}") from None
    if not isinstance(data, dict):
        raise RequestError(f"the body must be a JSON object, not {type(data).__name__}")
    check_text(data)
    return data


def _options(body: dict[str, Any], header_key: str | None) -> dict[str, Any]:
    priority = body.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise InvalidParams.for_field("priority", "must be an integer from 0 to 9")
    queue = body.get("queue")
    if queue is not None and (not isinstance(queue, str) or not 0 < len(queue) <= 100):
        raise InvalidParams.for_field("queue", "must be a queue name of 1 to 100 characters")
    delay = body.get("delay")
    if delay is not None and (
        isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay)
    ):
        raise InvalidParams.for_field("delay", "must be a number of seconds")
    key = body.get("idempotency_key", header_key)
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 200):
        raise InvalidParams.for_field("idempotency_key", "must be a string of 1 to 200 characters")
    return {"priority": priority, "queue": queue, "delay": delay, "idempotency_key": key}


async def read_form(request: Request) -> FormData:
    """A multipart or urlencoded body: files as UploadFile, other fields as text. Close it after use."""
    try:
        return await request.form(max_part_size=int(request.app.state.conveyor.settings.max_body_bytes))
    except Exception as e:  # starlette's MultiPartException, a malformed boundary
        raise RequestError(f"unreadable form body: {str(e)[:200]}") from None


def _form_bytes(form: FormData | None) -> int | None:
    """What a form weighs when it came chunked (no Content-Length): its files' sizes and its fields' lengths."""
    if form is None:
        return None
    return sum(
        (value.size or 0) if isinstance(value, UploadFile) else len(value.encode()) for _, value in form.multi_items()
    )


def _is_form(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").lower()
    return content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded"))


async def submit_from_body(
    app: Conveyor,
    caller: Caller,
    body: dict[str, Any],
    header_key: str | None,
    *,
    form: bool = False,
    body_bytes: int | None = None,
) -> TaskRecord:
    """Both body shapes: ``{task_type, params: {...}}`` and the flat ``{task_type, ...params}``.

    A tenant may submit public task types only; an internal one (maintenance
    that acts on every tenant) answers as an unknown type does.
    """
    name = task_type_of(app, caller, body)
    hook = _hook_for(app, name)
    if hook is not None:
        body = await hook(app, name, body, form=form, body_bytes=body_bytes)
    elif form:
        raise UnsupportedMediaType(
            f"task type {name!r} takes a JSON body: send it as application/json, not a form",
            details={"task_type": name},
        )
    params, options = params_and_options(app, caller, body, header_key, form=form)
    return await app.manager.aio.submit_task(name, params, tenant=caller.tenant, **options)


def task_type_of(app: Conveyor, caller: Caller, body: dict[str, Any]) -> str:
    """The body's ``task_type`` (or ``type``): one the caller may submit, or a 422/400 that lists the known ones."""
    registry = app.manager.registry
    name = body.get("task_type", body.get("type"))
    if not isinstance(name, str) or not name:
        known = registry.names(public=not caller.operator)
        raise InvalidParams.for_field(
            "task_type", "field required", type="missing", summary="task_type is required", known_types=known
        )
    if not caller.operator:
        registry.get_public(name)
    return name


def params_and_options(
    app: Conveyor, caller: Caller, body: dict[str, Any], header_key: str | None, *, form: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A submit body's task params and its options (priority capped for a tenant)."""
    if "params" in body:
        params = body["params"]
        if not isinstance(params, dict):
            raise InvalidParams.for_field("params", "must be a JSON object")
        extra = sorted(set(body) - OPTION_KEYS)
        if extra:
            raise InvalidParams.for_field(extra[0], "unknown field; task params go inside 'params'")
    else:
        params = {k: v for k, v in body.items() if k not in OPTION_KEYS}
    if form:
        check_text(params)
    options = _options(body, header_key)
    cap = app.settings.tenant_max_priority
    if not caller.operator and options["priority"] is not None and options["priority"] > cap:
        raise InvalidParams.for_field("priority", f"must be between 0 and {cap} for a tenant (operators: up to 9)")
    return params, options


def has_submit_hook(app: Conveyor, name: str) -> bool:
    """The task type reads its own submit body (files, its own limits)."""
    return _hook_for(app, name) is not None


def _hook_for(app: Conveyor, name: str) -> SubmitHook | None:
    try:
        canonical = app.registry.get(name).name
    except UnknownTaskType:
        return None  # the manager answers it, listing the known types
    return _submit_hooks.get(canonical)


@router.post(
    "",
    status_code=202,
    response_model=TaskCreated,
    summary="Submit a task",
    openapi_extra=SUBMIT_REQUEST,
    responses=SUBMIT_ERRORS,
)
async def submit(request: Request, app: App, caller: Who) -> Response:
    """Submit ``{"task_type": ..., "params": {...}}``; answers 202 with the task id at once.

    A task type with a submit hook may also take a multipart form (its files) on this route.
    """
    form = await read_form(request) if _is_form(request) else None
    declared = request.headers.get("content-length", "")
    try:
        body = dict(form.items()) if form is not None else await read_json_object(request)
        record = await submit_from_body(
            app,
            caller,
            body,
            request.headers.get("idempotency-key"),
            form=form is not None,
            body_bytes=int(declared) if declared.isdigit() else _form_bytes(form),
        )
    finally:
        if form is not None:
            await form.close()  # its files spool to temporary files
    created = TaskCreated.of(record)
    return json_response(created, status_code=202, headers={"Location": created.links["self"]})


@router.post(
    "/submit/",
    openapi_extra=SUBMIT_REQUEST,
    responses=SUBMIT_ERRORS,
    status_code=202,
    response_model=TaskCreated,
    summary="Submit a task (flat body)",
)
async def submit_flat(request: Request, app: App, caller: Who) -> Response:
    return await submit(request, app, caller)


@router.get("", response_model=TasksPublic, summary="List the caller's tasks")
async def list_tasks(
    manager: Manager,
    tenant: Tenant,
    status: Annotated[str | None, Query(description="comma-separated states")] = None,
    type: Annotated[str | None, Query(description="comma-separated task types")] = None,
    queue: Annotated[str | None, Query(description="comma-separated queues")] = None,
    q: Annotated[str | None, Query(max_length=36, description="task id prefix")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    oldest_first: bool = False,
) -> TasksPublic:
    states: list[Status] = []
    for s in _split(status):
        try:
            states.append(Status(s.upper()))
        except ValueError:
            raise InvalidParams.for_field(
                "status",
                f"must be one of {', '.join(x.value for x in Status)}",
                summary=f"Invalid request: status {s!r}",
            ) from None
    query = TaskQuery(
        tenant=tenant,
        states=states,
        types=_split(type),
        queues=_split(queue),
        id_prefix=q or None,
        limit=limit,
        offset=offset,
        newest_first=not oldest_first,
    )
    page = await manager.aio.list(query)
    return TasksPublic(
        data=[TaskPublic.of(r, with_result=False) for r in page.items], count=page.total, limit=limit, offset=offset
    )


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


# The reads a client polls are served as DirectRoutes: the caller and the task id are read here, not
# solved as FastAPI dependencies (a third of a status read's time went to solving and matching).


@direct(router, "/{task_id}", methods=["GET"], response_model=TaskPublic, summary="A task's full record")
async def get_task(request: Request) -> Response:
    """The error's traceback is shown to operators only."""
    app, caller, task_id = _reader(request)
    record = await app.manager.aio.get(task_id, tenant=caller.tenant)
    return json_response(TaskPublic.of(record, with_traceback=caller.operator))


@direct(
    router,
    "/{task_id}/status/",
    methods=["GET"],
    response_model=TaskStatus,
    summary="Status and progress (light, for polling)",
)
async def get_status(request: Request) -> Response:
    app, caller, task_id = _reader(request)
    return json_response(TaskStatus.of(await app.manager.aio.get(task_id, tenant=caller.tenant)))


@direct(
    router, "/{task_id}/result/", methods=["GET"], response_model=TaskResult, summary="The result of a finished task"
)
async def get_result(request: Request) -> Response:
    """409 while the task has not finished; a failed task answers with its error (traceback for operators);
    404 once its result has expired."""
    app, caller, task_id = _reader(request)
    record = await app.manager.aio.finished(task_id, tenant=caller.tenant)
    if record.expires_at is not None and record.expires_at <= time.time():
        # Kept until the next purge on SQL; gone at once on Redis. Either way: expired.
        expired = TaskNotFound(task_id)
        expired.message = f"the result of task {task_id!r} has expired"
        expired.details = {"task_id": task_id, "expired_at": iso(record.expires_at)}
        raise expired
    error = public_error(record.error, with_traceback=caller.operator)
    return json_response(TaskResult(task_id=record.id, status=record.state.value, result=record.result, error=error))


def _reader(request: Request) -> tuple[Conveyor, Caller, str]:
    """What the ``Who`` dependency gives (the rate limit taken), and the path's task id."""
    app = get_app(request)
    return app, get_caller_limited(request, app), request.path_params["task_id"]


@router.post("/{task_id}/cancel/", response_model=TaskStatus, summary="Cancel a task")
async def cancel_task(
    task_id: str,
    manager: Manager,
    tenant: Tenant,
    terminate: Annotated[bool, Query(description="kill a running task instead of asking it to stop")] = False,
) -> TaskStatus:
    """A waiting task is CANCELLED at once; a running one is asked to stop (it ends CANCELLED),
    or with ``?terminate=true`` is CANCELLED at once and the process running it killed."""
    record = await manager.aio.cancel(task_id, tenant=tenant, terminate=terminate)
    status = TaskStatus.of(record)
    if not record.finished:
        status.message = "Cancellation requested"
    return status


@router.post("/{task_id}/retry/", status_code=202, response_model=TaskCreated, summary="Run a failed task again")
async def retry_task(task_id: str, manager: Manager, tenant: Tenant) -> JSONResponse:
    record = await manager.aio.retry(task_id, tenant=tenant)
    return JSONResponse(TaskCreated.of(record).model_dump(), status_code=202)


@router.get("/{task_id}/timeline", summary="State changes and progress steps, oldest first")
async def timeline(
    task_id: str, manager: Manager, tenant: Tenant, after: Annotated[int, Query(ge=0, le=2**62)] = 0
) -> dict[str, Any]:
    events = await manager.aio.events(task_id, tenant=tenant, after_seq=after)
    return {
        "task_id": task_id,
        "data": [
            {
                "seq": e.seq,
                "at": iso(e.at),
                "kind": e.kind,
                "status": e.state.value,
                "progress": e.progress,
                "message": e.message,
            }
            for e in events
        ],
        "count": len(events),
    }


@router.get("/{task_id}/events", summary="Live progress and state changes (Server-Sent Events)", responses=EVENT_STREAM)
async def task_events(task_id: str, request: Request, app: App, caller: Who) -> EventSourceResponse:
    """A ``progress`` event for the current state, then one per step of the task's timeline, then ``end``.

    The stream reads the timeline (every state change, and the progress
    between them) rather than the record, so no step is skipped even when the
    task runs in another process and this stream only polls. Each event's
    ``id`` is its step's place on the timeline: a client that reconnects with
    ``Last-Event-ID`` (as ``EventSource`` does) gets the steps after it.
    """
    tenant = caller.tenant
    first = await app.manager.aio.get(task_id, tenant=tenant)  # 404 before the stream opens
    poll = STREAM_POLL if app.hears_every_change else REMOTE_POLL
    reads: SharedReads = request.app.state.shared_reads
    release = stream_slot(request, caller)

    async def stream() -> AsyncIterator[dict[str, Any]]:
        # Subscribed before the first read: a change between a read and the next wait is kept for it.
        subscription = app.hub.subscribe([task_id])
        try:
            async for event in follow(subscription):
                yield event
        finally:
            subscription.close()
            release()

    async def follow(subscription: Subscription) -> AsyncIterator[dict[str, Any]]:
        record = first
        resume = _last_event_id(request)
        if resume is None:
            events = await app.manager.aio.events(task_id, tenant=tenant)
            last_seq = events[-1].seq if events else 0
            yield {"event": "progress", "id": str(last_seq), "data": _event_json(record)}
            events = []
        else:
            # A browser's EventSource reconnecting: the steps it missed, then live again.
            last_seq = resume
            events = await app.manager.aio.events(task_id, tenant=tenant, after_seq=resume)
        while True:
            for e in events:
                last_seq = e.seq
                if e.state.finished:
                    continue  # the end event below carries the final record
                step = record.replace(state=e.state, progress=e.progress, message=e.message, updated_at=e.at)
                yield {"event": "progress", "id": str(e.seq), "data": _event_json(step)}
            if record.finished or await request.is_disconnected():
                break
            await subscription.changed(poll)
            try:
                # The task is the caller's (the first read said so, and a task keeps its tenant):
                # on each change only its new steps are read, in one read shared by every stream
                # the change woke (``shared_reads.py``).
                events = await reads.events(task_id, last_seq)
                if any(e.kind == "state" for e in events) or not events:
                    fresh = await reads.record(task_id)
                    if fresh is None:
                        return  # removed meanwhile (its result expired)
                    record = fresh
            except Exception:
                return
        if record.finished:
            yield {"event": "progress", "id": str(last_seq), "data": _event_json(record)}
            yield {"event": "end", "data": _event_json(record)}

    return EventSourceResponse(stream(), ping=15, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


#: seed 002's paths (``/api/tasks/{id}/status``, ``/cancel``), answered by the same handlers
legacy_router = SlashRouter(prefix="/api/tasks", tags=["tasks"], responses={**COMMON_ERRORS, **NOT_FOUND})
direct(legacy_router, "/{task_id}/status", methods=["GET"], response_model=TaskStatus)(get_status)
legacy_router.add_api_route("/{task_id}/cancel", cancel_task, methods=["POST"], response_model=TaskStatus)
direct(legacy_router, "/{task_id}", methods=["GET"], response_model=TaskPublic)(get_task)


def _event_json(r: TaskRecord) -> str:
    data = TaskStatus.of(r).model_dump()
    data.update(type=r.type, attempts=r.attempts, error=r.error, updated_at=iso(r.updated_at))
    return json.dumps(data)


def _last_event_id(request: Request) -> int | None:
    """The timeline step a reconnecting client last saw; None for a first connection (or a header that is no step)."""
    raw = request.headers.get("last-event-id", "").strip()
    if not raw.isdigit() or len(raw) > 18:
        return None
    return int(raw)
