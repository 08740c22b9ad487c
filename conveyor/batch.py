"""A batch of tasks, all or nothing: the engine of ``POST /api/v1/tasks/batch``.

``TaskManager.submit_many`` (``conveyor.submission``) answers each request on
its own: one bad request does not refuse the others. Over HTTP a client
should never have to work out which tasks of a batch exist, so
``submit_requests`` first checks every request (type, ranges, queue, params)
and stores nothing when any fails: the bad items answer their errors, the
valid ones ``NotSubmitted``. Only a batch that passes goes to
``submit_many``, one commit, which weighs a tenant's new tasks against its
unfinished-task cap together (a batch is one tenant's: all refused or none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor.errors import ConveyorError
from conveyor.submission import SubmitRequest, SubmitResult, check_request

if TYPE_CHECKING:
    from conveyor.manager import TaskManager

__all__ = ["NotSubmitted", "SubmitRequest", "check_requests", "submit_requests"]


class NotSubmitted(ConveyorError):
    """A valid item of a batch that was not stored because other items were invalid."""

    status_code = 422
    code = "not_submitted"


def check_requests(manager: TaskManager, requests: Sequence[SubmitRequest]) -> list[ConveyorError | None]:
    """What each request would meet on a submit, storing nothing: its error, or None."""
    queues = manager.declared_queues()
    errors: list[ConveyorError | None] = []
    for req in requests:
        try:
            check_request(manager, req, queues)
            errors.append(None)
        except ConveyorError as e:
            errors.append(e)
    return errors


def submit_requests(manager: TaskManager, requests: Sequence[SubmitRequest]) -> list[SubmitResult]:
    """Store every task of ``requests`` in one commit and dispatch them, or none; one answer per request.

    An ``ExecutorError`` for an item means it is stored but could not be
    handed to a worker (it ends FAILURE; the same idempotency key sends it
    again), as a single submit's 503.
    """
    errors = check_requests(manager, requests)
    bad = [i for i, e in enumerate(errors) if e is not None]
    if bad:
        names = ", ".join(str(i) for i in bad[:20])
        stopped = NotSubmitted(f"not stored: the batch was refused for item(s) {names}", details={"items": bad})
        return [e if e is not None else stopped for e in errors]
    return manager.submit_many(requests)
