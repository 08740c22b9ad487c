"""The API's JSON shapes. Field names follow the seeds' clients (task_id, status, progress, message)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from starlette.responses import Response

from conveyor.records import TaskRecord
from conveyor.registry import TaskType
from conveyor.stores.base import QueueStats

__all__ = [
    "QueuePublic",
    "QueuesPublic",
    "TaskCreated",
    "TaskPublic",
    "TaskResult",
    "TaskStatus",
    "TaskTypePublic",
    "TaskTypesPublic",
    "TasksCreated",
    "TasksPublic",
    "iso",
    "json_response",
]


def json_response(model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``model`` encoded once, by pydantic-core: a route returning a model would have FastAPI
    validate it again against the response model and encode it through ``jsonable_encoder``."""
    body = type(model).__pydantic_serializer__.to_json(model)
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


class TaskCreated(BaseModel):
    """Answer to a submit (202): the id to follow, at once."""

    task_id: str
    status: str
    message: str
    type: str
    queue: str
    created_at: str | None
    links: dict[str, str]

    @classmethod
    def of(cls, r: TaskRecord, prefix: str = "/api/v1/tasks") -> TaskCreated:
        return cls(
            task_id=r.id,
            status=r.state.value,
            message="Task submitted" if r.state.value == "PENDING" else r.message,
            type=r.type,
            queue=r.queue,
            created_at=iso(r.created_at),
            links=_links(r.id, prefix),
        )


def _links(task_id: str, prefix: str) -> dict[str, str]:
    base = f"{prefix}/{task_id}"
    return {
        "self": base,
        "status": f"{base}/status/",
        "result": f"{base}/result/",
        "events": f"{base}/events",
        "cancel": f"{base}/cancel/",
        "retry": f"{base}/retry/",
    }


class TaskStatus(BaseModel):
    """The light answer polled by progress bars."""

    task_id: str
    status: str
    progress: float
    message: str
    result_available: bool

    @classmethod
    def of(cls, r: TaskRecord) -> TaskStatus:
        return cls(
            task_id=r.id,
            status=r.state.value,
            progress=round(r.progress, 2),
            message=r.message,
            result_available=r.result_available,
        )


class TaskPublic(BaseModel):
    task_id: str
    type: str
    queue: str
    status: str
    progress: float
    message: str
    meta: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    result_available: bool
    error: dict[str, Any] | None = None
    attempts: int
    max_retries: int
    priority: int
    cancel_requested: bool
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    expires_at: str | None
    updated_at: str | None
    duration: float | None
    links: dict[str, str]

    @classmethod
    def of(cls, r: TaskRecord, *, with_result: bool = True, with_traceback: bool = False) -> TaskPublic:
        return cls(
            task_id=r.id,
            type=r.type,
            queue=r.queue,
            status=r.state.value,
            progress=round(r.progress, 2),
            message=r.message,
            meta=r.meta or {},
            params=r.params,
            result=r.result if with_result else None,
            result_available=r.result_available,
            error=public_error(r.error, with_traceback=with_traceback),
            attempts=r.attempts,
            max_retries=r.max_retries,
            priority=r.priority,
            cancel_requested=r.cancel_requested,
            created_at=iso(r.created_at),
            started_at=iso(r.started_at),
            finished_at=iso(r.finished_at),
            expires_at=iso(r.expires_at),
            updated_at=iso(r.updated_at),
            duration=None if r.duration is None else round(r.duration, 4),
            links=_links(r.id, "/api/v1/tasks"),
        )


def public_error(error: dict[str, Any] | None, *, with_traceback: bool) -> dict[str, Any] | None:
    """A task's error as a caller sees it: the traceback (server paths, code) is for operators only."""
    if error is None or with_traceback:
        return error
    return {k: v for k, v in error.items() if k != "traceback"}


class TasksPublic(BaseModel):
    data: list[TaskPublic]
    count: int
    limit: int
    offset: int


class TaskResult(BaseModel):
    task_id: str
    status: str
    result: Any = None
    error: dict[str, Any] | None = None


class TaskTypePublic(BaseModel):
    name: str
    queue: str
    description: str
    params_schema: dict[str, Any]
    max_retries: int
    soft_time_limit: float | None
    time_limit: float | None
    priority: int
    result_ttl: float | None
    heavy: bool
    aliases: list[str] = []
    visibility: str = "public"

    @classmethod
    def of(cls, t: TaskType) -> TaskTypePublic:
        return cls(
            name=t.name,
            queue=t.queue,
            description=t.description,
            params_schema=t.schema(),
            max_retries=t.max_retries,
            soft_time_limit=t.soft_time_limit,
            time_limit=t.time_limit,
            priority=t.priority,
            result_ttl=t.result_ttl,
            heavy=t.heavy,
            aliases=list(t.aliases),
            visibility=t.visibility,
        )


class TaskTypesPublic(BaseModel):
    data: list[TaskTypePublic]
    count: int


class QueuePublic(BaseModel):
    queue: str
    #: tasks waiting to run, as the store counts them (PENDING + RETRY)
    depth: int
    counts: dict[str, int]
    #: messages waiting in the broker's queue (Celery only; None when there is no broker or it is down)
    broker_depth: int | None = None

    @classmethod
    def of(cls, q: QueueStats, broker_depth: int | None = None) -> QueuePublic:
        return cls(queue=q.queue, depth=q.depth, counts=q.counts, broker_depth=broker_depth)


class QueuesPublic(BaseModel):
    data: list[QueuePublic]
    count: int


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, e.g. invalid_params, task_not_found, store_unavailable")
    message: str
    #: for a 422, a list of ``{field, message, type}``; otherwise an object or null
    details: Any = None


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer."""

    error: ErrorDetail


#: the answers any API route may give besides its own, for the OpenAPI document
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no API key, or one nobody owns"},
    422: {"model": ErrorBody, "description": "a field that does not fit: each is named in details"},
    429: {"model": ErrorBody, "description": "too many requests or unfinished tasks; see Retry-After"},
    503: {"model": ErrorBody, "description": "the store or the broker cannot be reached; see Retry-After"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no such task for this tenant (another tenant's task too)"}
}
SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "unreadable JSON, or an unknown task type (the known ones listed)"},
    413: {"model": ErrorBody, "description": "the body is larger than the limit"},
    415: {"model": ErrorBody, "description": "the body is not JSON"},
}
#: a Server-Sent Events answer
EVENT_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "text/event-stream: `progress` events, then `end`",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


class SubmitBody(BaseModel):
    """``{"task_type": ..., "params": {...}}``; the flat form puts the params beside ``task_type``."""

    task_type: str = Field(description="a task type from /api/v1/task-types (``type`` is accepted too)")
    params: dict[str, Any] = Field(default_factory=dict, description="checked against the type's params_schema")
    priority: int | None = Field(default=None, ge=0, le=9)
    queue: str | None = Field(default=None, description="a declared queue; default: the type's")
    idempotency_key: str | None = Field(default=None, max_length=200, description="or the Idempotency-Key header")
    delay: float | None = Field(default=None, ge=0, description="seconds before it may start")


#: the submit routes read their body themselves (two shapes); this tells OpenAPI what it is
SUBMIT_REQUEST: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": SubmitBody.model_json_schema()}},
    }
}


class TasksCreated(BaseModel):
    """Answer to a batch submit (202): one entry per item, in the order sent."""

    data: list[TaskCreated]
    count: int


class BatchBody(BaseModel):
    """``{"tasks": [item, ...]}``: each item has the shape of a single submit's body (either form)."""

    tasks: list[SubmitBody] = Field(description="at most CONVEYOR_MAX_BATCH_SIZE items (1000 by default)")


BATCH_REQUEST: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": BatchBody.model_json_schema()}},
    }
}
