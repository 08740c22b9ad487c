"""Submitting many tasks at once: one store commit, an answer per task.

``TaskManager.submit_many(requests)`` checks each request on its own (an
unknown type, bad params or a full quota fail that request, not the batch),
writes every accepted record in one insert, then dispatches each. The answer
is a list in the order of the requests: the task's record, or the
``ConveyorError`` that refused it. ``submit()`` is the same path with one
request.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError, InvalidParams, QuotaExceeded, StoreError
from conveyor.records import TaskRecord, new_task_id, now
from conveyor.stores.base import DuplicateTask
from conveyor.transitions import never_dispatched

if TYPE_CHECKING:
    from conveyor.manager import TaskManager
    from conveyor.registry import TaskType

__all__ = ["MAX_DELAY", "SubmitRequest", "SubmitResult", "check_request", "submit_many"]

#: a task id a caller may choose (the store's id column holds 36 characters)
_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,36}")
#: the longest delay a task may be given, in seconds
MAX_DELAY = 366 * 86400


@dataclasses.dataclass(frozen=True, slots=True)
class SubmitRequest:
    """One task to submit: its type, its params and the options of ``submit``."""

    task_type: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    _: dataclasses.KW_ONLY
    #: the submitting tenant; the manager's local tenant when None
    tenant: str | None = None
    priority: int | None = None
    queue: str | None = None
    idempotency_key: str | None = None
    #: seconds before the task may start
    delay: float | None = None
    #: the new task's id (Celery's ``apply_async(task_id=)``); an existing one returns that task
    task_id: str | None = None


#: what ``submit_many`` answers for each request
SubmitResult = TaskRecord | ConveyorError


@dataclasses.dataclass(slots=True)
class _Batch:
    """The answers so far, and the records still to be written."""

    results: list[SubmitResult | None]
    new: list[tuple[int, TaskRecord]] = dataclasses.field(default_factory=list)
    #: (tenant, idempotency key) or task id of a record new in this batch → its index
    claimed: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    #: a later request naming the same key or id as an earlier one → that one's index
    same_as: dict[int, int] = dataclasses.field(default_factory=dict)


def submit_many(
    manager: TaskManager, requests: Sequence[SubmitRequest], *, background_tasks: Any = None
) -> list[SubmitResult]:
    """Validate every request, write the accepted ones in one commit, dispatch them."""
    batch = _Batch([None] * len(requests))
    routes: dict[str, str] = {}
    t = now()
    declared = manager.declared_queues()
    for i, request in enumerate(requests):
        try:
            _prepare(manager, batch, i, request, routes, t, declared)
        except ConveyorError as e:
            batch.results[i] = e
    _check_quotas(manager, batch)
    _write(manager, batch)
    _dispatch(manager, batch, background_tasks)
    for later, first in batch.same_as.items():
        batch.results[later] = batch.results[first]
    out = [r for r in batch.results if r is not None]
    assert len(out) == len(requests)
    return out


def check_request(manager: TaskManager, r: SubmitRequest, declared: set[str]) -> tuple[TaskType, dict[str, Any]]:
    """What needs no store: the type, the ranges, the queue, the id's form and the params.

    Raises what a submit of ``r`` would meet; returns the task type and the
    validated params. The single submit, ``submit_many`` and the all-or-nothing
    HTTP batch (``conveyor.batch``) all check a request here, so they refuse
    the same things with the same words.
    """
    tt = manager.registry.get(r.task_type)
    if r.priority is not None and not 0 <= r.priority <= 9:
        raise InvalidParams.for_field("priority", "must be between 0 and 9", type="range")
    if r.delay is not None and not 0 <= r.delay <= MAX_DELAY:
        raise InvalidParams.for_field("delay", f"must be between 0 and {MAX_DELAY} seconds (a year)", type="range")
    if r.queue is not None and r.queue not in declared:
        raise InvalidParams.for_field(
            "queue", f"unknown queue {r.queue!r}; the declared queues are {', '.join(sorted(declared))}"
        )
    if r.task_id is not None and not _TASK_ID.fullmatch(r.task_id):
        raise InvalidParams.for_field("task_id", "names one task: 1-36 letters, digits, '-' or '_'")
    return tt, tt.validate(r.params)


def _prepare(
    manager: TaskManager,
    batch: _Batch,
    i: int,
    r: SubmitRequest,
    routes: dict[str, str],
    t: float,
    declared: set[str],
) -> None:
    """Answer request ``i`` now (an existing task, an error) or add its new record to the batch."""
    tt, params = check_request(manager, r, declared)
    tenant = r.tenant or manager.settings.local_tenant
    names: list[tuple[str, str]] = []
    if r.idempotency_key is not None:
        names.append((tenant, r.idempotency_key))
        existing = manager.store.find_by_idempotency_key(tenant, r.idempotency_key)
        if existing is not None:
            # A 503 refused the first try: the client's retry with the same key
            # sends the stored task now (or is refused again), never a dead 202.
            batch.results[i] = manager.retry(existing.id, tenant=tenant) if never_dispatched(existing) else existing
            return
    if r.task_id is not None:
        names.append(("", r.task_id))
        existing = manager.store.get(r.task_id)
        if existing is not None:
            if existing.tenant != tenant or existing.type != tt.name:
                raise InvalidParams.for_field("task_id", "is already the id of another task")
            batch.results[i] = existing
            return
    for name in names:
        if name in batch.claimed:
            # An earlier request of this batch creates that task: this one gets its answer.
            batch.same_as[i] = batch.claimed[name]
            return
    for name in names:
        batch.claimed[name] = i
    engine = routes.get(tt.name)
    if engine is None:
        engine = routes[tt.name] = manager.executor.route(tt)
    # Per task: a Celery task's deadline to have started (``expected_by``) follows its own delay.
    claim = manager.executor.claim_fields(engine, due=t + r.delay if r.delay else t)
    record = TaskRecord(
        id=r.task_id or new_task_id(),
        type=tt.name,
        queue=r.queue or tt.queue,
        tenant=tenant,
        params=params,
        max_retries=tt.max_retries,
        priority=tt.priority if r.priority is None else r.priority,
        idempotency_key=r.idempotency_key,
        executor=engine,
        eta=t + r.delay if r.delay else None,
        created_at=t,
        updated_at=t,
        message="Queued",
        **claim,
    )
    batch.new.append((i, record))


def _check_quotas(manager: TaskManager, batch: _Batch) -> None:
    """Each tenant's new tasks fit under its cap together, or none of them is written."""
    per_tenant: dict[str, int] = {}
    for _, record in batch.new:
        per_tenant[record.tenant] = per_tenant.get(record.tenant, 0) + 1
    refused: dict[str, QuotaExceeded] = {}
    for tenant, n in per_tenant.items():
        try:
            manager.check_quota(tenant, n)
        except QuotaExceeded as e:
            refused[tenant] = e
    if refused:
        for i, record in batch.new:
            if record.tenant in refused:
                batch.results[i] = refused[record.tenant]
        batch.new = [(i, r) for i, r in batch.new if r.tenant not in refused]


def _write(manager: TaskManager, batch: _Batch) -> None:
    """One insert for the whole batch; after a clash, one per record, so each gets its own answer."""
    if not batch.new:
        return
    try:
        manager.store.insert([r for _, r in batch.new])
        return
    except StoreError as e:
        for i, _ in batch.new:
            batch.results[i] = e
        batch.new = []
        return
    except (DuplicateTask, InvalidParams) as e:
        if len(batch.new) == 1:
            i, record = batch.new[0]
            batch.results[i] = _winner(manager, record) if isinstance(e, DuplicateTask) else e
            batch.new = []
            return
    written: list[tuple[int, TaskRecord]] = []
    for i, record in batch.new:
        try:
            manager.store.insert([record])
            written.append((i, record))
        except DuplicateTask:
            # Another submit raced on this idempotency key (or task id): the first one wins.
            batch.results[i] = _winner(manager, record)
        except ConveyorError as e:
            batch.results[i] = e
    batch.new = written


def _winner(manager: TaskManager, record: TaskRecord) -> SubmitResult:
    existing = (
        manager.store.get(record.id)
        if record.idempotency_key is None
        else manager.store.find_by_idempotency_key(record.tenant, record.idempotency_key)
    )
    if existing is not None:
        return existing
    field = "task_id" if record.idempotency_key is None else "idempotency_key"
    return InvalidParams.for_field(field, "was taken by a task that has since been removed; submit again")


def _dispatch(manager: TaskManager, batch: _Batch, background_tasks: Any) -> None:
    counts: dict[str, int] = {}
    for _, r in batch.new:
        counts[r.type] = counts.get(r.type, 0) + 1
    for name, n in counts.items():
        manager.metrics.submitted(name, n)
    sending: list[tuple[int, TaskRecord]] = []
    for i, r in batch.new:
        batch.results[i] = r
        manager.metrics.remember(r.id, r.type)
        if background_tasks is not None and r.executor == "local":
            manager._dispatch_after_response(background_tasks, r)
        else:
            sending.append((i, r))
    if not sending:
        return
    # All at once: on RabbitMQ one wait for the batch's confirms; on the local pool one wake-up.
    errors = manager.executor.dispatch_many([r for _, r in sending])
    for (i, r), error in zip(sending, errors, strict=True):
        if error is not None:
            manager._refuse(r, error)
            batch.results[i] = error
