"""The task state machine: every change of a task's state is built here, with its timeline event.

``PENDING → PROCESSING → SUCCESS | FAILURE | CANCELLED``, with ``RETRY``
between attempts and a way back to ``PENDING`` (a requeue: worker lost,
retry not delivered, moved to another executor, run again). Executors, the
manager and the hybrid router take their fields and messages from these
functions and hand the result to the store (``Store.apply`` for a ``Change``,
``Store.reset`` for a conditional move back to ``PENDING``, which writes the
fields and the event in one write); the stores' own atomic paths
(``start_run``, ``request_cancel``) follow the same fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from conveyor.records import Status, TaskEvent, TaskRecord
from conveyor.stores.base import Change

__all__ = [
    "NOT_DISPATCHED",
    "Outcome",
    "Requeue",
    "failure_outcome",
    "never_dispatched",
    "not_dispatched",
    "outcome_change",
    "process_lost",
    "progress_change",
    "requeue",
    "started_change",
]

#: the error type of a stored task that no executor would take (its submit answered 503)
NOT_DISPATCHED = "ExecutorError"


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt ended in."""

    state: Status
    result: Any = None
    error: dict[str, Any] | None = None
    #: for RETRY: seconds until the next attempt
    retry_in: float | None = None


def started_change(
    record: TaskRecord, *, attempt: int, worker: str | None, lease_until: float | None, at: float
) -> Change:
    fields: dict[str, Any] = {
        "state": Status.PROCESSING,
        "attempts": attempt,
        "started_at": at,
        "updated_at": at,
        "progress": 0.0,
        "message": "Started",
        "eta": None,
        "error": None,
    }
    if worker is not None:
        fields["worker"] = worker
        fields["lease_expires_at"] = lease_until
    return Change(record.id, fields, [TaskEvent(record.id, at, Status.PROCESSING, 0.0, "Started", kind="state")])


def progress_change(task_id: str, progress: float, message: str, meta: dict[str, Any], at: float) -> Change:
    fields: dict[str, Any] = {"progress": progress, "message": message, "updated_at": at}
    if meta:
        fields["meta"] = meta
    return Change(task_id, fields, [TaskEvent(task_id, at, Status.PROCESSING, progress, message)])


def outcome_change(
    record: TaskRecord,
    outcome: Outcome,
    *,
    at: float,
    result_ttl: float,
    progress: float | None = None,
    cancelled_message: str = "Cancelled",
) -> Change:
    """The change that records how an attempt ended."""
    state = outcome.state
    fields: dict[str, Any] = {"state": state, "updated_at": at}
    if state is Status.RETRY:
        delay = outcome.retry_in or 0.0
        err = outcome.error or {}
        message = f"Retrying in {delay:.1f}s after: {err.get('message', 'error')}"
        fields.update(eta=at + delay, error=outcome.error, message=message)
        return Change(record.id, fields, [TaskEvent(record.id, at, state, progress or 0.0, message, kind="state")])
    fields["finished_at"] = at
    fields["expires_at"] = at + result_ttl if result_ttl > 0 else None
    fields["lease_expires_at"] = None
    if state is Status.SUCCESS:
        message = "Completed"
        fields.update(result=outcome.result, progress=100.0, message=message, error=None)
        progress = 100.0
    elif state is Status.CANCELLED:
        message = cancelled_message
        fields["message"] = message
    else:
        message = (outcome.error or {}).get("message", "failed")
        fields.update(error=outcome.error, message=message)
    return Change(record.id, fields, [TaskEvent(record.id, at, state, progress or 0.0, message, kind="state")])


def failure_outcome(message: str, error_type: str = "WorkerError") -> Outcome:
    return Outcome(Status.FAILURE, error={"type": error_type, "message": message, "traceback": ""})


def process_lost(record: TaskRecord, cause: str, *, time_limit: bool, retry_in: float) -> Outcome:
    """How an attempt ends whose process died under it (``cause`` says how), as on the local pool.

    Another attempt while the task's retries allow one, except after a hard
    time limit (the next attempt would pass it too); otherwise FAILURE naming
    the cause and the attempt.
    """
    attempt = record.attempts
    message = f"{cause} on attempt {attempt}"
    if not time_limit and attempt <= record.max_retries:
        return Outcome(
            Status.RETRY, error={"type": "WorkerLost", "message": message, "traceback": ""}, retry_in=retry_in
        )
    if time_limit:
        return failure_outcome(message, "TimeLimitExceeded")
    return failure_outcome(f"{message}; redelivery limit reached", "WorkerLost")


@dataclasses.dataclass(frozen=True, slots=True)
class Requeue:
    """A move back to PENDING: the fields to set, the states it may come from, and its timeline event."""

    task_id: str
    fields: dict[str, Any]
    from_states: tuple[Status, ...]
    event: TaskEvent


def requeue(
    record: TaskRecord,
    message: str,
    *,
    at: float,
    from_states: tuple[Status, ...] | None = None,
    **fields: Any,
) -> Requeue:
    """Back to PENDING with ``message`` (the worker, lease and ``fields`` as given); see ``Store.reset``."""
    values: dict[str, Any] = {"state": Status.PENDING, "message": message, "updated_at": at, **fields}
    return Requeue(
        record.id,
        values,
        from_states if from_states is not None else (record.state,),
        TaskEvent(record.id, at, Status.PENDING, float(values.get("progress", record.progress)), message, kind="state"),
    )


def not_dispatched(record: TaskRecord, reason: str, *, at: float) -> Change:
    """A stored task no executor would take ends FAILURE (the submit answers 503), not in limbo."""
    message = f"not dispatched: {reason}"
    fields: dict[str, Any] = {
        "state": Status.FAILURE,
        "finished_at": at,
        "updated_at": at,
        "message": message,
        "error": {"type": NOT_DISPATCHED, "message": message, "traceback": ""},
    }
    return Change(record.id, fields, [TaskEvent(record.id, at, Status.FAILURE, 0.0, message, kind="state")])


def never_dispatched(record: TaskRecord) -> bool:
    return record.state is Status.FAILURE and (record.error or {}).get("type") == NOT_DISPATCHED
