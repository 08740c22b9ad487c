"""POST /api/v1/tasks/batch: many tasks in one request and one commit, all or nothing.

A batch is stored whole or not at all. An invalid item answers 422 naming
every bad item by its index and field, and nothing is stored: fix those and
send the same batch again (a partly stored batch would leave the client to
work out which tasks exist). Over the tenant's unfinished-task cap, 429; the
store down, 503; either way nothing is stored. Each item may carry its own
idempotency key: an item whose key names a stored task answers that task, so
a batch sent twice makes its tasks once.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import Request, Response

from conveyor.api.deps import App, Who
from conveyor.api.limits import TenantLimits
from conveyor.api.routes.tasks import has_submit_hook, params_and_options, read_json_object, task_type_of
from conveyor.api.routing import SlashRouter
from conveyor.api.schemas import (
    BATCH_REQUEST,
    COMMON_ERRORS,
    SUBMIT_ERRORS,
    TaskCreated,
    TasksCreated,
    json_response,
)
from conveyor.batch import NotSubmitted, SubmitRequest, check_requests, submit_requests
from conveyor.errors import ConveyorError, ExecutorError, InvalidParams, QuotaExceeded

__all__ = ["router"]

router = SlashRouter(prefix="/api/v1/tasks", tags=["tasks"], responses=COMMON_ERRORS)


class InvalidBatch(InvalidParams):
    """One or more items of a batch are invalid: ``details`` lists each, by ``index``."""

    code = "invalid_batch"


@router.post(
    "/batch",
    status_code=202,
    response_model=TasksCreated,
    summary="Submit many tasks at once (one commit, all or nothing)",
    openapi_extra=BATCH_REQUEST,
    responses=SUBMIT_ERRORS,
)
async def submit_batch(request: Request, app: App, caller: Who) -> Response:
    """``{"tasks": [{"task_type": ..., "params": {...}}, ...]}``: 202 with every task, in order, once all are stored.

    422 (``invalid_batch``) when any item is invalid: ``details`` has one entry per problem,
    ``{index, field, message, type, code}``, and nothing is stored.
    """
    body = await read_json_object(request)
    items = body.get("tasks")
    limit = app.settings.max_batch_size
    if not isinstance(items, list) or not items:
        raise InvalidParams.for_field("tasks", "must be a non-empty list of tasks")
    if len(items) > limit:
        raise InvalidParams.for_field("tasks", f"holds {len(items)} tasks; a batch holds at most {limit}", type="size")
    extra = sorted(set(body) - {"tasks"})
    if extra:
        raise InvalidParams.for_field(extra[0], 'unknown field; a batch is {"tasks": [...]}')
    if not caller.operator and len(items) > 1:
        limits: TenantLimits = request.app.state.limits
        limits.hit(caller.tenant, cost=len(items) - 1)  # the request itself took one already
    parsed: list[SubmitRequest | ConveyorError] = [_item(app, caller, item) for item in items]
    requests = [p for p in parsed if isinstance(p, SubmitRequest)]
    if len(requests) < len(parsed):
        # Name every bad item at once, those whose params are wrong too, not only the unreadable ones.
        checked = iter(await anyio.to_thread.run_sync(check_requests, app.manager, requests))
        _refuse([p if isinstance(p, ConveyorError) else next(checked) for p in parsed])
    results = await anyio.to_thread.run_sync(submit_requests, app.manager, requests)
    _refuse(results)
    created = [TaskCreated.of(r) for r in results if not isinstance(r, ConveyorError)]
    return json_response(TasksCreated(data=created, count=len(created)), status_code=202)


def _item(app: Any, caller: Any, item: Any) -> SubmitRequest | ConveyorError:
    """One item as a request, or the error a single submit of it would answer."""
    try:
        if not isinstance(item, dict):
            raise InvalidParams.for_field("item", f"must be a JSON object, not {type(item).__name__}")
        name = task_type_of(app, caller, item)
        if has_submit_hook(app, name):
            raise InvalidParams.for_field(
                "task_type", f"{name!r} reads its own body (files): submit it on POST /api/v1/tasks"
            )
        params, options = params_and_options(app, caller, item, None)
        return SubmitRequest(task_type=name, params=params, tenant=caller.tenant, **options)
    except ConveyorError as e:
        return e


def _refuse(results: list[Any]) -> None:
    """Raise for the batch when any item failed: 503 before 429 before 422 (the client can act on each)."""
    errors = [(i, r) for i, r in enumerate(results) if isinstance(r, ConveyorError) and not isinstance(r, NotSubmitted)]
    if not errors:
        return
    for kind in (ExecutorError, QuotaExceeded):
        for i, e in errors:
            if isinstance(e, kind):
                e.details = {**(e.details if isinstance(e.details, dict) else {}), "index": i}
                raise e
    details: list[dict[str, Any]] = []
    for i, e in errors:
        found = e.details if isinstance(e.details, list) else [{"message": e.message, "details": e.details}]
        details += [{"index": i, "code": e.code, **d} for d in found]
    bad = sorted({i for i, _ in errors})
    raise InvalidBatch(
        f"{len(bad)} of {len(results)} tasks are invalid (items {', '.join(map(str, bad[:20]))}); nothing was stored",
        details=details,
    )
