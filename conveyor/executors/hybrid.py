"""The hybrid executor (seed 002): heavy task types on Celery, the rest in-process.

A task type goes to Celery when it is marked ``heavy=True`` or named in
``CONVEYOR_CELERY_TASK_TYPES``; everything else runs in the local pool of the
API process. Both write to the one store, so one API shows both.

When the broker is down at submit time, ``CONVEYOR_BROKER_DOWN`` decides:
``local`` (the default) runs the task in-process instead, and says so in its
message; ``reject`` answers 503 and the record ends FAILURE with the reason.
Either way nothing is left waiting for a message that was never sent. After a
failed send the broker is taken for down for ``BROKER_RETRY_SECONDS``, so a
burst of submits during an outage does not wait on a connection timeout each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conveyor.errors import ExecutorError
from conveyor.executors.celery import CeleryExecutor
from conveyor.executors.local import LocalExecutor
from conveyor.records import Status, TaskRecord, now
from conveyor.registry import TaskType
from conveyor.transitions import requeue

if TYPE_CHECKING:
    from conveyor.settings import Settings
    from conveyor.stores.base import Store

__all__ = ["HybridExecutor"]

log = logging.getLogger("conveyor.executors.hybrid")

#: how long a failed send marks the broker as down before the next try
BROKER_RETRY_SECONDS = 5.0


class HybridExecutor:
    name = "hybrid"

    def __init__(self, local: LocalExecutor, celery: CeleryExecutor, *, store: Store, settings: Settings) -> None:
        self.store = store
        self.local = local
        self.celery = celery
        self.celery_types = frozenset(settings.celery_task_types) | frozenset(settings.heavy_tasks)
        self.fallback = settings.broker_down == "local"
        self._broker_down_until = 0.0
        self._lock = threading.Lock()
        self.fallbacks = 0

    # -- routing ---------------------------------------------------------------

    def route(self, task_type: TaskType) -> str:
        # A type is named by its canonical name or by any alias (seed 002 names ``process_speak_audio``).
        names = {task_type.name, *task_type.aliases}
        if not (task_type.heavy or names & self.celery_types):
            return "local"
        if self.fallback and self._broker_known_down():
            return "local"
        return "celery"

    def _broker_known_down(self) -> bool:
        with self._lock:
            return time.monotonic() < self._broker_down_until

    def claim_fields(self, engine: str, *, due: float | None = None) -> dict[str, Any]:
        chosen = self.local if engine == "local" else self.celery
        return chosen.claim_fields(engine, due=due)

    def dispatch(self, record: TaskRecord) -> None:
        if record.executor != "celery":
            self.local.dispatch(record)
            return
        try:
            self.celery.dispatch(record)
        except ExecutorError as e:
            refused = self._broker_refused(record, e)
            if refused is not None:
                raise refused from e

    def dispatch_many(self, records: Sequence[TaskRecord]) -> list[ExecutorError | None]:
        local = [i for i, r in enumerate(records) if r.executor != "celery"]
        remote = [i for i, r in enumerate(records) if r.executor == "celery"]
        errors: list[ExecutorError | None] = [None] * len(records)
        for i, error in zip(local, self.local.dispatch_many([records[i] for i in local]), strict=True):
            errors[i] = error
        for i, error in zip(remote, self.celery.dispatch_many([records[i] for i in remote]), strict=True):
            errors[i] = None if error is None else self._broker_refused(records[i], error)
        return errors

    def _broker_refused(self, record: TaskRecord, e: ExecutorError) -> ExecutorError | None:
        """The broker did not take ``record``: run it here instead (None), or the error to answer with."""
        with self._lock:
            self._broker_down_until = time.monotonic() + BROKER_RETRY_SECONDS
        if not self.fallback:
            return ExecutorError(
                f"{e.message}; this task type runs on Celery workers and "
                "CONVEYOR_BROKER_DOWN=reject, so it was not accepted",
                details={"task_id": record.id, "task_type": record.type},
            )
        self._run_here_instead(record, e)
        return None

    def _run_here_instead(self, record: TaskRecord, error: ExecutorError) -> None:
        """Hand a record stored for Celery to the local pool, changing its owner in the store first."""
        store = self.store
        t = now()
        message = "Broker unavailable; running in-process instead"
        move = requeue(
            record, message, at=t, from_states=(Status.PENDING,), executor="local", **self.local.claim_fields("local")
        )
        moved = store.reset(move.task_id, move.fields, move.from_states, move.event)
        if moved is None:  # cancelled meanwhile: nothing to run
            return
        log.warning("broker down (%s); task %s of type %s runs in-process", error.message, record.id, record.type)
        self.fallbacks += 1
        self.local.dispatch(moved)

    def cancel(self, record: TaskRecord) -> None:
        (self.celery if record.executor == "celery" else self.local).cancel(record)

    def terminate(self, record: TaskRecord) -> None:
        (self.celery if record.executor == "celery" else self.local).terminate(record)

    # -- lifecycle and reports -------------------------------------------------

    def start(self) -> None:
        self.local.start()
        self.celery.start()

    def stop(self, *, graceful: bool = True) -> None:
        self.celery.stop(graceful=graceful)
        self.local.stop(graceful=graceful)

    def health(self) -> dict[str, Any]:
        local = self.local.health()
        celery = self.celery.health()
        # In-process work goes on without the broker, and heavy work falls back
        # to it: a broker outage degrades the service, it does not stop it.
        if local["status"] == "down":
            status = "down" if celery["status"] == "down" or not self.fallback else "degraded"
        elif local["status"] == "ok" and celery["status"] == "ok":
            status = "ok"
        else:
            status = "degraded"
        return {
            "status": status,
            "kind": "hybrid",
            "local": local,
            "celery": celery,
            "broker": celery["broker"],
            "workers_alive": local["workers_alive"] + celery["workers_alive"],
        }

    def stats(self) -> dict[str, Any]:
        return {"local": self.local.stats(), "celery": self.celery.stats(), "fallbacks": self.fallbacks}

    def broker_depths(self) -> dict[str, int]:
        return self.celery.broker_depths()

    def workers(self) -> list[dict[str, Any]]:
        local = [{**w, "executor": "local"} for w in self.local.workers()]
        celery = [{**w, "executor": "celery"} for w in self.celery.workers()]
        return local + celery
