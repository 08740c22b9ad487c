"""Conveyor's one exception hierarchy.

Every error carries the HTTP status and machine-readable code the API answers
with, so a single handler maps any of them to ``{"error": {code, message,
details}}``::

    ConveyorError
    ├── ConfigurationError          500  settings that cannot work
    ├── MissingExtra                500  an optional dependency is not installed
    ├── AuthenticationError         401  no key, or a key nobody owns
    ├── Forbidden                   403  an operator's action asked for by a tenant
    ├── RateLimited                 429  a tenant's request rate or open streams; Retry-After
    ├── NotFound                    404  nothing of that id for this tenant (a workload's
    │   │                                objects too: a document, a correction)
    │   └── TaskNotFound            404  (also another tenant's task; a TaskError as well)
    ├── RequestError                400  a request the API cannot read
    │   ├── PayloadTooLarge         413
    │   └── UnsupportedMediaType    415
    ├── TaskError
    │   ├── UnknownTaskType         400  (also an internal type asked for over HTTP)
    │   ├── TaskFailed              500  raised by ``handle.get()`` for a task that failed
    │   ├── InvalidParams           422  names each bad field
    │   ├── InvalidTransition       409  e.g. cancelling a finished task
    │   ├── TaskNotFinished         409  asking for a result too early
    │   └── QuotaExceeded           429
    └── Unavailable                 503  a dependency is down or too slow; Retry-After, names it
        ├── StoreError              503  the database cannot be reached
        └── ExecutorError           503  the broker or worker pool cannot take work

Inside a running task, three signals travel as exceptions:
``TaskCancelled`` (the task stopped because it was asked to),
``SoftTimeLimitExceeded`` (raised in the task when its soft limit passes) and
``Retry`` (the task asks to be run again later).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.records import TaskRecord

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "ConveyorError",
    "ExecutorError",
    "Forbidden",
    "InvalidParams",
    "InvalidTransition",
    "MissingExtra",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "RequestError",
    "Retry",
    "SoftTimeLimitExceeded",
    "StoreError",
    "TaskCancelled",
    "TaskError",
    "TaskFailed",
    "TaskNotFinished",
    "TaskNotFound",
    "Unavailable",
    "UnknownTaskType",
    "UnsupportedMediaType",
]


class ConveyorError(Exception):
    """Root of every error Conveyor raises on purpose."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ConfigurationError(ConveyorError):
    code = "configuration_error"


class MissingExtra(ConfigurationError):
    """An optional part was asked for but its dependency is not installed."""

    code = "missing_extra"

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module} is not installed; install it with: pip install 'conveyor[{extra}]'",
            details={"module": module, "extra": extra},
        )


class AuthenticationError(ConveyorError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ConveyorError):
    status_code = 403
    code = "forbidden"


class NotFound(ConveyorError):
    """Nothing of that id for this caller; another tenant's object answers the same."""

    status_code = 404
    code = "not_found"


class RateLimited(ConveyorError):
    """Too many requests or open streams from one tenant; ``retry_after`` says when to try again."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, details: Any = None) -> None:
        super().__init__(message, details=details or {"retry_after": round(retry_after, 3)})
        self.retry_after = retry_after


class RequestError(ConveyorError):
    status_code = 400
    code = "bad_request"


class PayloadTooLarge(RequestError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(RequestError):
    status_code = 415
    code = "unsupported_media_type"


class TaskError(ConveyorError):
    status_code = 400
    code = "task_error"


class TaskNotFound(NotFound, TaskError):
    status_code = 404
    code = "task_not_found"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"No task with id {task_id!r}", details={"task_id": task_id})


class UnknownTaskType(TaskError):
    status_code = 400
    code = "unknown_task_type"

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"Unknown task type {name!r}; known types: {', '.join(known)}",
            details={"task_type": name, "known_types": known},
        )


class InvalidParams(TaskError):
    """Params that do not fit the task type's model; ``details`` names each field."""

    status_code = 422
    code = "invalid_params"

    @classmethod
    def for_field(
        cls, field: str, message: str, *, type: str = "value", summary: str | None = None, **extra: Any
    ) -> InvalidParams:
        """One field's error, named the way the 422 body names every field.

        ``summary`` replaces the top-level message (``Invalid request: <field>``);
        ``extra`` keys join the field's detail (e.g. ``known_types``).
        """
        detail = {"field": field, "message": message, "type": type, **extra}
        return cls(summary or f"Invalid request: {field}", details=[detail])


class TaskFailed(TaskError):
    """A task ended FAILURE (or CANCELLED) and its caller asked for the result: ``details`` is its error."""

    status_code = 500
    code = "task_failed"

    @classmethod
    def of(cls, record: TaskRecord) -> TaskFailed:
        error = record.error or {}
        kind = error.get("type") or record.state.value
        message = error.get("message") or record.message or record.state.value
        return cls(
            f"task {record.id} ended {record.state.value}: {kind}: {message}",
            details={"task_id": record.id, "status": record.state.value, "error": error},
        )


class InvalidTransition(TaskError):
    status_code = 409
    code = "invalid_transition"


class TaskNotFinished(TaskError):
    status_code = 409
    code = "task_not_finished"


class QuotaExceeded(TaskError):
    status_code = 429
    code = "quota_exceeded"


class Unavailable(ConveyorError):
    """A dependency is down or did not answer within its deadline: 503, ``Retry-After``, the dependency named."""

    status_code = 503
    dependency = "service"

    def __init__(self, message: str, *, details: Any = None, dependency: str | None = None) -> None:
        super().__init__(
            message, details=details if details is not None else {"dependency": dependency or self.dependency}
        )


_REASONS = (
    (("timed out", "timeout", "no answer", "deadline"), "no answer within its deadline"),
    (("refused",), "connection refused"),
    (("reset", "closed", "terminat", "lost", "broken pipe", "eof"), "connection lost"),
    (("too many", "max number of clients", "remaining connection slots"), "too many connections"),
    (("locked", "busy"), "busy (locked)"),
    (("authentication", "password", "access refused", "permission"), "refused our credentials"),
    (("name or service", "resolve", "unknown host", "nodename"), "its host name does not resolve"),
)


def outage_reason(error: BaseException) -> str:
    """What went wrong with a dependency, in words that name no host, port, user or path.

    The driver's own text (``connection to server at "10.0.3.7", port 5432
    failed``) is for the operator's log, where the exception's cause keeps it;
    the message a tenant reads says only what kind of outage it is.
    """
    text = f"{type(error).__name__} {getattr(error, 'orig', None) or error}".lower()
    for words, reason in _REASONS:
        if any(w in text for w in words):
            return reason
    return "cannot be reached"


class StoreError(Unavailable):
    """The task store cannot be reached, did not answer in time, or refused a write."""

    code = "store_unavailable"
    dependency = "database"


class ExecutorError(Unavailable):
    """The executor cannot take work now (broker down or too slow, pool stopped)."""

    code = "executor_unavailable"
    dependency = "executor"


# Signals raised inside task functions. They are not failures of Conveyor, so
# they sit outside the HTTP-facing tree on purpose.


class TaskCancelled(Exception):
    """Raised by ``ctx.raise_if_cancelled()``; the task ends CANCELLED."""


class SoftTimeLimitExceeded(Exception):
    """Raised inside a task when its soft time limit passes; it may clean up."""


class Retry(Exception):
    """Raise from a task to be run again after ``countdown`` seconds (or the backoff)."""

    def __init__(self, message: str = "retry requested", *, countdown: float | None = None) -> None:
        super().__init__(message)
        self.countdown = countdown
