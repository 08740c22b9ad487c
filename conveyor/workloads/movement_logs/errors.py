"""The movement logs workload's errors, under Conveyor's one hierarchy (``conveyor.errors``)."""

from __future__ import annotations

from conveyor.errors import NotFound, RequestError, StoreError

__all__ = ["InvalidJson", "InvalidPage", "LogQueueUnavailable"]


class InvalidJson(RequestError):
    """A body that is not JSON at all (400, as DRF's parse error)."""

    code = "invalid_json"


class InvalidPage(NotFound):
    """A page past the last one: DRF answers 404 ``Invalid page.``; so do we, naming the field."""

    code = "invalid_page"

    def __init__(self, page: int, pages: int) -> None:
        super().__init__(
            f"Invalid page: page {page} is past the last page ({pages})",
            details=[{"field": "page", "message": f"must be at most {pages}", "type": "range"}],
        )


class LogQueueUnavailable(StoreError):
    """The log queue's backend (Redis, or the queue table) cannot take or give logs now."""

    code = "log_queue_unavailable"
