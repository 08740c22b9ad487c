"""The Celery reaper: in the API process, it sends again what a dead worker or the broker lost.

Three kinds of Celery task wait for a message that may never come:

* PROCESSING whose lease lapsed: its worker died while running it. It is
  queued again, unless workers died under it ``MAX_REDELIVERIES`` times more
  than its retries allow; then it ends FAILURE saying so (a task that takes
  down every worker that runs it must not be retried forever).
* RETRY whose lease lapsed: its worker wrote the retry but could not send
  the retry's message.
* PENDING past ``expected_by``: its message was lost (a broker restarted
  without its data, an API process that died between the insert and the
  send) or sits unacknowledged in a worker that died (Redis gives such
  messages back only after its visibility timeout, hours later; delayed and
  prefetched ones are held that way). It is sent again, and its deadline
  moves as far again as it has already waited, so a task that merely waits
  in a long backlog earns a few duplicates, not one per round.

A second message for a task is harmless: ``Store.start_run`` is one atomic
claim, so one message runs the task and the others are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor.executors.base import MAX_REDELIVERIES, failure_outcome, outcome_change, result_ttl_for
from conveyor.records import Status, TaskRecord, now
from conveyor.transitions import requeue

if TYPE_CHECKING:
    from conveyor.registry import Registry
    from conveyor.settings import Settings
    from conveyor.stores.base import Store

__all__ = ["OVERDUE_BATCH", "Reaper"]

log = logging.getLogger("conveyor.executors.celery")

#: overdue tasks read (and sent again) at a time; a round reads batches until one is short
OVERDUE_BATCH = 500
#: at most this many batches a round, so that a huge loss does not hold one round for long
OVERDUE_BATCHES = 20


class Reaper:
    """One round at a time (``run_round``); the executor runs the rounds on its thread."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        send: Callable[[TaskRecord], None],
        registry: Registry | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.send = send
        self.registry = registry
        #: tasks queued again after their worker died, or whose retry message never came
        self.redispatched = 0
        #: PENDING tasks sent again past their deadline
        self.resent = 0
        #: tasks failed because workers kept dying under them
        self.given_up = 0

    @property
    def interval(self) -> float:
        return self.settings.celery_reap_interval or max(1.0, self.settings.lease_seconds / 3)

    @property
    def grace(self) -> float:
        return self.settings.celery_pending_grace

    def deadline(self, due: float) -> float:
        """The ``expected_by`` of a task that may start at ``due``."""
        return due + self.grace

    def run_round(self) -> int:
        """Lapsed leases first, then overdue waiting tasks; returns how many messages were sent."""
        t = now()
        return self._lapsed(t) + self._overdue(t)

    def _lapsed(self, t: float) -> int:
        sent = 0
        for r in self.store.recoverable("celery", t, states=(Status.PROCESSING, Status.RETRY)):
            if r.state is Status.PROCESSING and r.attempts >= r.max_retries + 1 + MAX_REDELIVERIES:
                self._give_up(r, t)
                continue
            message = (
                "Worker lost; queued again" if r.state is Status.PROCESSING else "Retry not delivered; queued again"
            )
            # Conditional on the state it was read in: of several reapers (one
            # per API replica) only one gets the record back, and only it sends.
            # Its new deadline covers a send that fails below.
            move = requeue(r, message, at=t, worker=None, lease_expires_at=None, expected_by=self.deadline(t))
            requeued = self.store.reset(move.task_id, move.fields, move.from_states, move.event)
            if requeued is None:
                continue
            log.warning("task %s lost its worker; dispatching it again", r.id)
            self.send(requeued.replace(eta=None))
            self.redispatched += 1
            sent += 1
        return sent

    def _give_up(self, r: TaskRecord, t: float) -> None:
        reason = f"worker lost while running this task on each of {r.attempts} attempts; redelivery limit reached"
        task_type = self.registry.get(r.type) if self.registry is not None and r.type in self.registry else None
        change = outcome_change(
            r,
            failure_outcome(reason, "WorkerLost"),
            at=t,
            result_ttl=result_ttl_for(task_type, self.settings.effective_result_ttl),
            progress=r.progress,
        )
        if self.store.reset(r.id, change.fields, (Status.PROCESSING,), change.events[0]) is not None:
            log.error("task %s failed: %s", r.id, reason)
            self.given_up += 1

    def _overdue(self, t: float) -> int:
        sent = 0
        for _ in range(OVERDUE_BATCHES):
            batch = self.store.overdue("celery", t, limit=OVERDUE_BATCH)
            for r in batch:
                # Sent first: a send the broker refuses leaves the deadline where
                # it was (the next round tries again, /health counts it).
                self.send(r)
                waited = t - (r.eta or r.created_at)
                move = requeue(r, "Not started in time; sent again", at=t, expected_by=t + max(self.grace, waited))
                self.store.reset(move.task_id, move.fields, move.from_states, move.event)
                self.resent += 1
                sent += 1
            if len(batch) < OVERDUE_BATCH:
                break
        if sent:
            log.warning("sent %d waiting tasks again: not started by their deadline (message lost?)", sent)
        return sent

    def health(self) -> dict[str, Any]:
        """Waiting tasks past their deadline: ``overdue`` now, and ``stranded`` (past it by a whole grace).

        A stranded task is one the reaper should have sent again long ago and
        could not: the service is degraded while there is one.
        """
        t = now()
        try:
            late = self.store.overdue("celery", t, limit=1000)
        except Exception as e:  # the database's own entry in /health says it is away
            return {"overdue": None, "stranded": 0, "error": str(e)[:200]}
        stranded = sum(1 for r in late if (r.expected_by or t) < t - self.grace)
        return {"overdue": len(late), "stranded": stranded}

    def stats(self) -> dict[str, int]:
        return {"redispatched": self.redispatched, "resent": self.resent, "given_up": self.given_up}
