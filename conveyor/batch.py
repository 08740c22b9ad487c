"""Submitting many tasks, each with its own type and options, in one store commit.

``submit_requests(manager, requests)`` answers one entry per request, in
order: the task's record, or the error that item alone would have met on a
single submit. It is all or nothing: when any item is invalid (or over the
tenant's unfinished-task cap) nothing is stored, and every valid item answers
``NotSubmitted`` naming the items that stopped the batch, so a client can fix
those and send the same batch again.

An item whose idempotency key names a stored task answers that task, as a
single submit does; two items with one key are one task.

This is the HTTP batch route's engine (``POST /api/v1/tasks/batch``).
``TaskManager.submit_many`` (one task type, many params) stays the Python
bulk API; a manager-level ``submit_many(requests)`` may replace this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError, ExecutorError, InvalidParams, QuotaExceeded
from conveyor.records import TaskRecord, new_task_id, now
from conveyor.stores.base import DuplicateTask
from conveyor.transitions import never_dispatched

if TYPE_CHECKING:
    from conveyor.manager import TaskManager

__all__ = ["NotSubmitted", "SubmitRequest", "check_requests", "submit_requests"]

#: longest delay a task may be given, in seconds (as on a single submit)
MAX_DELAY = 366 * 86400


class NotSubmitted(ConveyorError):
    """A valid item of a batch that was not stored because other items were invalid."""

    status_code = 422
    code = "not_submitted"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SubmitRequest:
    """One task to submit: what ``TaskManager.submit_task`` takes."""

    task_type: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tenant: str | None = None
    priority: int | None = None
    queue: str | None = None
    idempotency_key: str | None = None
    delay: float | None = None


def _checked(manager: TaskManager, req: SubmitRequest, queues: set[str]) -> TaskRecord:
    """The record ``req`` would store (not yet stored); raises what a single submit would."""
    tt = manager.registry.get(req.task_type)
    ranges = (("priority", req.priority, 9, "must be between 0 and 9"), ("delay", req.delay, MAX_DELAY, None))
    for name, value, top, message in ranges:
        if value is not None and not 0 <= value <= top:
            raise InvalidParams.for_field(name, message or f"must be between 0 and {top} seconds", type="range")
    if req.queue is not None and req.queue not in queues:
        raise InvalidParams.for_field("queue", f"unknown queue {req.queue!r}; declared: {', '.join(sorted(queues))}")
    params = tt.validate(req.params)
    engine = manager.executor.route(tt)
    t = now()
    return TaskRecord(
        id=new_task_id(),
        type=tt.name,
        queue=req.queue or tt.queue,
        tenant=req.tenant or manager.settings.local_tenant,
        params=params,
        max_retries=tt.max_retries,
        priority=tt.priority if req.priority is None else req.priority,
        idempotency_key=req.idempotency_key,
        executor=engine,
        eta=t + req.delay if req.delay else None,
        created_at=t,
        updated_at=t,
        message="Queued",
        **manager.executor.claim_fields(engine),
    )


def check_requests(manager: TaskManager, requests: Sequence[SubmitRequest]) -> list[ConveyorError | None]:
    """What each request would meet on a submit, storing nothing: its error, or None."""
    queues = manager.declared_queues()
    errors: list[ConveyorError | None] = []
    for req in requests:
        try:
            _checked(manager, req, queues)
            errors.append(None)
        except ConveyorError as e:
            errors.append(e)
    return errors


def submit_requests(manager: TaskManager, requests: Sequence[SubmitRequest]) -> list[TaskRecord | ConveyorError]:
    """Store every new task of ``requests`` in one commit and dispatch them; one result per request.

    An ``ExecutorError`` for an item means it is stored but could not be
    handed to a worker (it ends FAILURE; the same idempotency key sends it
    again), as a single submit's 503.
    """
    try:
        return _submit(manager, requests)
    except DuplicateTask:
        # Another submit stored one of our idempotency keys between our look-up and our commit:
        # look again, and that item answers the stored task.
        return _submit(manager, requests)


def _submit(manager: TaskManager, requests: Sequence[SubmitRequest]) -> list[TaskRecord | ConveyorError]:
    queues = manager.declared_queues()
    results: list[TaskRecord | ConveyorError] = []
    new: list[TaskRecord] = []  # the records this batch stores, each once
    by_key: dict[tuple[str, str], TaskRecord | ConveyorError] = {}  # (tenant, key) -> its first item's answer
    for req in requests:
        tenant = req.tenant or manager.settings.local_tenant
        key = None if req.idempotency_key is None else (tenant, req.idempotency_key)
        try:
            record = _checked(manager, req, queues)
            if key is not None and key in by_key:
                results.append(by_key[key])  # two items with one key are one task
                continue
            existing = None if key is None else manager.store.find_by_idempotency_key(*key)
            if existing is None:
                new.append(record)
            else:
                record = existing
        except ConveyorError as e:
            results.append(e)
            continue
        if key is not None:
            by_key[key] = record
        results.append(record)
    bad = [i for i, r in enumerate(results) if isinstance(r, ConveyorError)] or _over_quota(manager, new, results)
    if bad:
        names = ", ".join(str(i) for i in bad[:20])
        stopped = NotSubmitted(f"not stored: the batch was refused for item(s) {names}", details={"items": bad})
        return [stopped if isinstance(r, TaskRecord) else r for r in results]
    if new:
        manager.store.insert(new)
    stored = {r.id for r in new}
    # A key whose stored task a broker refused earlier is sent again now, as on a single submit.
    retried: dict[str, TaskRecord] = {}
    for r in results:
        if isinstance(r, TaskRecord) and r.id not in stored and r.id not in retried and never_dispatched(r):
            retried[r.id] = manager.retry(r.id, tenant=r.tenant)
    results = [retried.get(r.id, r) if isinstance(r, TaskRecord) else r for r in results]
    return _dispatch(manager, new, results)


def _over_quota(manager: TaskManager, new: list[TaskRecord], results: list[TaskRecord | ConveyorError]) -> list[int]:
    """Each tenant's new tasks against its unfinished-task cap; the items of a tenant over it fail."""
    per_tenant: dict[str, int] = {}
    for record in new:
        per_tenant[record.tenant] = per_tenant.get(record.tenant, 0) + 1
    bad: list[int] = []
    ids = {record.id for record in new}
    for tenant, count in per_tenant.items():
        try:
            manager._quota.check(manager, tenant, count)
        except QuotaExceeded as e:
            for i, r in enumerate(results):
                if isinstance(r, TaskRecord) and r.tenant == tenant and r.id in ids:
                    results[i] = e
                    bad.append(i)
    return sorted(bad)


def _dispatch(
    manager: TaskManager, new: list[TaskRecord], results: list[TaskRecord | ConveyorError]
) -> list[TaskRecord | ConveyorError]:
    counts: dict[str, int] = {}
    refused: dict[str, ExecutorError] = {}
    for r in new:
        counts[r.type] = counts.get(r.type, 0) + 1
        manager.metrics.remember(r.id, r.type)
        try:
            manager.executor.dispatch(r)
        except ExecutorError as e:
            manager._refuse(r, e)
            refused[r.id] = e
    for name, n in counts.items():
        manager.metrics.submitted(name, n)
    return [refused.get(r.id, r) if isinstance(r, TaskRecord) else r for r in results]
