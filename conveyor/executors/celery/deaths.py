"""What a Celery worker's main process does when a pool process dies under a task.

A pool process that passes its hard time limit is killed by the worker; one
that kills itself (a crash in C code, the OOM killer, ``os._exit``) just
goes. Left to Celery, the first is acknowledged and the second put back in
the queue, and either way the store still says PROCESSING under a lease
that nobody renews: the reaper sends it again once the lease lapses, and the
task kills its next process too — for ever.

The main process is still alive and knows why the process died, so it
writes the attempt's end itself, as the local pool does: a death while
retries remain is a RETRY with the task's backoff; otherwise, and always
after a hard time limit (the next attempt would pass it too), FAILURE
naming the cause and the attempt. Then the message is acknowledged. The
main process uses a store handle of its own, made on first need: the one
its pool processes inherit is theirs.

When the whole worker dies, nobody is left to say why; the reaper's cap
(``reaper.py``) ends such a task after ``MAX_REDELIVERIES`` extra attempts.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from typing import TYPE_CHECKING, Any

from conveyor.executors.base import outcome_change, result_ttl_for
from conveyor.records import Status, now
from conveyor.stores import open_store
from conveyor.transitions import process_lost

if TYPE_CHECKING:
    from celery import Celery

    from conveyor.app import Conveyor
    from conveyor.stores.base import Store

__all__ = ["RETRY_GRACE_SECONDS", "ProcessDeaths", "death_cause", "request_class", "retry_fields"]

log = logging.getLogger("conveyor.executors.celery")

#: a retry waiting for its countdown is sent by the reaper if its message has not run it this long after
RETRY_GRACE_SECONDS = 60.0

_PREMATURE = re.compile(r"exited prematurely:\s*(?P<why>.*?)\.?(?:\s+Job:\s*\d+\.?)?$")


def retry_fields(fields: dict[str, Any]) -> None:
    """Nobody holds a waiting retry; its lease says when the reaper may send it if its message never comes."""
    fields.update(worker=None, lease_expires_at=fields["eta"] + RETRY_GRACE_SECONDS)


def death_cause(exc: BaseException) -> str:
    """``worker process died (signal 9 (SIGKILL))`` from Celery's ``WorkerLostError``, or the exit code."""
    if isinstance(exc, SystemExit):
        return f"worker process exited (code {exc.code})"
    found = _PREMATURE.search(str(exc))
    return f"worker process died ({found.group('why')})" if found else f"worker process died ({exc})"


class ProcessDeaths:
    """Settles the run of a task whose pool process died, from the worker's main process."""

    def __init__(self, conveyor: Conveyor, app: Celery) -> None:
        self.conveyor = conveyor
        self.app = app
        self.host = socket.gethostname()
        self._store: Store | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                s = self.conveyor.settings
                self._store = open_store(s.resolved_database_url, result_ttl=s.effective_result_ttl)
            return self._store

    def settle(self, task_id: str, pid: int | None, cause: str, *, time_limit: bool) -> bool:
        """Write how the attempt of process ``pid`` ended; True when its message may be acknowledged.

        False leaves the message to Celery: the store could not be reached,
        or the record is not this process's run (it never claimed it).
        """
        try:
            store = self.store
            record = store.get(task_id)
            if record is None or record.finished:
                return True  # nothing left to run: the message can go
            if record.state is not Status.PROCESSING or pid is None:
                return False
            if not (record.worker or "").startswith(f"celery:{self.host}:{pid}:"):
                return False
            task_type = self.conveyor.registry.get(record.type) if record.type in self.conveyor.registry else None
            delay = task_type.retry_delay(record.attempts) if task_type is not None else 1.0
            outcome = process_lost(record, cause, time_limit=time_limit, retry_in=delay)
            ttl = result_ttl_for(task_type, self.conveyor.settings.effective_result_ttl)
            change = outcome_change(record, outcome, at=now(), result_ttl=ttl, progress=record.progress)
            if outcome.state is Status.RETRY:
                retry_fields(change.fields)
            if store.reset(task_id, change.fields, (Status.PROCESSING,), change.events[0]) is None:
                return True  # finished or taken over meanwhile: the store has its answer
        except Exception as e:  # the store is away: Celery's own handling puts the message back
            log.warning("could not record the death of task %s's process: %s", task_id, e)
            return False
        log.error("task %s: %s", task_id, change.fields.get("message"))
        if outcome.state is Status.RETRY:
            self._send_retry(task_id, record.type, record.queue, record.priority, outcome.retry_in or 0.0)
        return True

    def _send_retry(self, task_id: str, name: str, queue: str, priority: int, countdown: float) -> None:
        try:
            self.app.send_task(
                name, args=[task_id], task_id=task_id, countdown=countdown, queue=queue, priority=priority
            )
        except Exception as e:  # its lease deadline lets the reaper send it
            log.warning("retry of task %s not queued (broker unavailable); the reaper will send it: %s", task_id, e)


def request_class(deaths: ProcessDeaths) -> type:
    """Celery's ``Request`` with the two places a pool process's death is heard (main process) taken over."""
    from billiard.exceptions import WorkerLostError
    from celery.worker.request import Request
    from celery.worker.state import task_ready

    class ConveyorRequest(Request):  # type: ignore[misc]
        def on_timeout(self, soft: bool, timeout: float) -> None:
            if not soft:
                cause = f"hard time limit ({timeout:g}s) exceeded"
                deaths.settle(self.id, self.worker_pid, cause, time_limit=True)
            # Celery logs it and acknowledges the message (acks on timeout).
            super().on_timeout(soft, timeout)

        def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
            exc = getattr(exc_info.exception, "exc", exc_info.exception)  # ExceptionWithTraceback
            stopped_by_us = getattr(self, "_already_cancelled", False) or getattr(self, "_already_revoked", False)
            died = isinstance(exc, WorkerLostError) or (isinstance(exc, SystemExit) and not stopped_by_us)
            if died and deaths.settle(self.id, self.worker_pid, death_cause(exc), time_limit=False):
                task_ready(self)
                self.acknowledge()
                return
            super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    return ConveyorRequest
