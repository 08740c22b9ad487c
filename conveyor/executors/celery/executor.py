"""The Celery executor, the part in the API process: sends task ids, reaps lapsed leases, asks the workers.

Conveyor task types run as Celery tasks on Redis or RabbitMQ (``worker.py``
is what runs inside a Celery worker, ``app.py`` the app both build).

The store stays the truth; Celery only carries work. A message holds nothing
but the task id. A worker that receives it claims the run in the store
(``Store.start_run``: PENDING/RETRY, or PROCESSING whose lease lapsed) and
drops the message if it cannot — so a redelivered message, a revoked task
after a worker restart, or a reaper's second dispatch never runs a task twice
at once. While a task runs, its worker renews the lease; the reaper
(``reaper.py``) re-dispatches tasks whose lease lapsed (their worker died),
within about ``lease_seconds`` on either broker, and sends again waiting
tasks not started by their ``expected_by`` deadline (a lost or stranded
message), without relying on Redis's visibility timeout. Outcomes are
written to the store before the message is acknowledged (late acks), so
nothing is lost between the two. On RabbitMQ every send waits for the
broker's confirm: a message the broker did not take is an error, not a loss
(a batch waits once for all of its messages' confirms: ``confirms.py``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.errors import ExecutorError, outage_reason
from conveyor.executors.celery.app import SEND_CONFIRM_TIMEOUT, SEND_RETRY, is_amqp
from conveyor.executors.celery.confirms import BatchNotConfirmed, ConfirmedBatches
from conveyor.executors.celery.reaper import Reaper
from conveyor.executors.celery.worker import TERMINATE_COMMAND
from conveyor.records import TaskRecord, now
from conveyor.registry import TaskType

if TYPE_CHECKING:
    from celery import Celery

    from conveyor.registry import Registry
    from conveyor.settings import Settings
    from conveyor.stores.base import Store

__all__ = ["WORKERS_REFRESH", "CeleryExecutor"]

log = logging.getLogger("conveyor.executors.celery")

#: how often the API process asks the workers who is alive (for /health and /api/v1/workers)
WORKERS_REFRESH = 3.0


class CeleryExecutor:
    """Dispatches to Celery workers; re-dispatches tasks whose worker died (lease lapsed)."""

    name = "celery"

    def __init__(self, app: Celery, *, store: Store, settings: Settings, registry: Registry | None = None) -> None:
        """``app`` is the Celery app of this Conveyor (``create_celery_app``); the executor sends through it."""
        self.app = app
        self.store = store
        self.settings = settings
        self.reaper = Reaper(store, settings, self.send, registry)
        amqp = is_amqp(settings.broker_url)
        self._confirm = {"confirm_timeout": SEND_CONFIRM_TIMEOUT} if amqp else {}
        self._batches = (
            ConfirmedBatches(app, timeout=SEND_CONFIRM_TIMEOUT, connect_timeout=settings.broker_timeout)
            if amqp
            else None
        )
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        # Asking workers takes a full broadcast timeout; a background thread
        # asks every WORKERS_REFRESH seconds so /health and /workers answer at once.
        self._seen: list[dict[str, Any]] | None = None
        self._seen_at = 0.0
        self._seen_lock = threading.Lock()
        self._monitor: threading.Thread | None = None

    def route(self, task_type: TaskType) -> str:
        return "celery"

    def claim_fields(self, engine: str, *, due: float | None = None) -> dict[str, Any]:
        # In the insert itself: a message lost at any point after it (the API
        # dying before the send, the broker losing it) is sent again past this.
        return {"expected_by": self.reaper.deadline(now() if due is None else due)}

    @property
    def redispatched(self) -> int:
        return self.reaper.redispatched

    def start(self) -> None:
        if self._reaper is None:
            self._stop.clear()
            self._reaper = threading.Thread(target=self._reap_loop, name="conveyor-reaper", daemon=True)
            self._reaper.start()
            self._monitor = threading.Thread(target=self._monitor_loop, name="conveyor-monitor", daemon=True)
            self._monitor.start()

    def stop(self, *, graceful: bool = True) -> None:
        self._stop.set()
        for thread in (self._reaper, self._monitor):
            if thread is not None:
                thread.join(5)
        self._reaper = self._monitor = None
        if self._batches is not None:
            self._batches.close()
        self.app.close()

    @staticmethod
    def _options(record: TaskRecord) -> dict[str, Any]:
        return {
            "queue": record.queue,
            "priority": record.priority,
            "countdown": max(0.0, record.eta - now()) if record.eta else None,
        }

    def send(self, record: TaskRecord) -> None:
        try:
            self.app.send_task(
                record.type,
                args=[record.id],
                task_id=record.id,
                # One quick retry: a pooled connection the broker has closed (a
                # restart) is replaced; a broker that is down fails at once.
                retry=True,
                retry_policy=SEND_RETRY,
                **self._options(record),
                **self._confirm,
            )
        except Exception as e:  # kombu raises OperationalError, ConnectionRefusedError, ...
            raise _send_error(e) from e

    def dispatch(self, record: TaskRecord) -> None:
        self.send(record)

    def dispatch_many(self, records: Sequence[TaskRecord]) -> list[ExecutorError | None]:
        """Send each record; on RabbitMQ a batch waits once for all its confirms (``confirms.py``).

        A batch the broker did not wholly confirm is refused whole: which of
        its messages arrived is unknown, and a task refused here whose
        message did arrive is dropped by its worker's claim.
        """
        if self._batches is None or len(records) < 2:
            return [_attempt(self.send, r) for r in records]
        try:
            self._batches.send(records, self._options)
        except BatchNotConfirmed as e:  # its own words name no host
            return [ExecutorError(f"the broker did not take the batch: {e}", dependency="broker")] * len(records)
        except Exception as e:
            return [_send_error(e)] * len(records)
        return [None] * len(records)

    def cancel(self, record: TaskRecord) -> None:
        """Nothing to do here: the store already says so.

        A queued message for a cancelled task is dropped by ``start_run``, and
        a running task sees the store's flag through ``ctx.cancelled`` —
        both survive a worker restart. Celery's ``revoke`` is not used: it
        lives in worker memory, and since a retried task keeps its id, a
        remembered revoke would silently drop the retry.
        """

    def terminate(self, record: TaskRecord) -> None:
        """Ask every worker to kill the pool process running this task (SIGTERM).

        A command of our own, not Celery's ``revoke(terminate=True)``: a revoke
        is remembered by the workers, and would silently drop this task's id
        if it were retried later. The record already says CANCELLED, so the
        message, if it comes back, is dropped by ``start_run``.
        """
        try:
            self.app.control.broadcast(TERMINATE_COMMAND, arguments={"task_id": record.id})
        except Exception as e:  # the broker is away: the task is CANCELLED in the store all the same
            log.warning("could not ask the workers to terminate task %s: %s", record.id, e)

    def reap(self) -> int:
        """One reaper round now (see ``reaper.py``); returns how many messages it sent."""
        return self.reaper.run_round()

    def _reap_loop(self) -> None:
        while not self._stop.wait(self.reaper.interval):
            try:
                self.reap()
            except Exception as e:
                log.warning("reaper round failed: %s", e)

    def _monitor_loop(self) -> None:
        while True:
            try:
                self._refresh_workers()
            except Exception as e:  # the broker is away: the next round asks again
                log.debug("worker refresh failed: %s", e)
            if self._stop.wait(WORKERS_REFRESH):
                return

    def _refresh_workers(self) -> list[dict[str, Any]]:
        found = self.worker_list(timeout=1.0)
        with self._seen_lock:
            self._seen, self._seen_at = found, time.monotonic()
        return found

    def health(self) -> dict[str, Any]:
        broker = self.broker_health()
        workers = self.workers() if broker["status"] == "ok" else []
        alive = sum(1 for w in workers if w["alive"])
        waiting = self.reaper.health()
        status = "ok" if broker["status"] == "ok" and alive else ("degraded" if broker["status"] == "ok" else "down")
        if status == "ok" and waiting["stranded"]:
            status = "degraded"
        return {"status": status, "kind": "celery", "broker": broker, "workers_alive": alive, "waiting": waiting}

    def broker_health(self) -> dict[str, Any]:
        url = self.settings.broker_url
        kind = "rabbitmq" if url.startswith(("amqp", "pyamqp")) else "redis"
        try:
            with self.app.connection_for_write() as conn:
                # One quick retry: kombu's default 2 s pause before it would use up
                # the whole health deadline on a broker that refuses at once.
                conn.ensure_connection(
                    max_retries=1, interval_start=0.2, interval_step=0.2, timeout=self.settings.broker_timeout
                )
            return {"status": "ok", "kind": kind}
        except Exception as e:
            return {"status": "down", "kind": kind, "error": str(e)[:200]}

    def worker_list(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        try:
            ping = self.app.control.inspect(timeout=timeout).ping() or {}
            # The workers that answered are asked the rest by name, and each
            # broadcast ends as soon as all of them have replied.
            named = self.app.control.inspect(timeout=timeout, destination=list(ping), limit=len(ping))
            active = (named.active() or {}) if ping else {}
            registered = (named.registered() or {}) if ping else {}
            stats = (named.stats() or {}) if ping else {}
        except Exception as e:
            if not self._stop.is_set():  # a broadcast cut short by stop() is no news
                log.warning("inspect failed: %s", e)
            return []
        names = sorted(set(ping) | set(active) | set(stats))
        return [
            {
                "name": name,
                "alive": name in ping,
                "active": [t.get("id") for t in active.get(name, [])],
                "registered": registered.get(name, []),
                "processed": sum((stats.get(name, {}).get("total") or {}).values()),
                "pid": stats.get(name, {}).get("pid"),
            }
            for name in names
        ]

    def workers(self) -> list[dict[str, Any]]:
        """The workers as last seen (at most a few seconds ago); asks them now if nobody has lately."""
        with self._seen_lock:
            seen, age = self._seen, time.monotonic() - self._seen_at
        if seen is not None and age < 3 * WORKERS_REFRESH:
            return seen
        return self._refresh_workers()

    def stats(self) -> dict[str, Any]:
        return {"broker": self.settings.broker_url.split("@")[-1], **self.reaper.stats()}

    def broker_depths(self) -> dict[str, int]:
        """Messages waiting in each of the app's queues, as the broker counts them.

        RabbitMQ answers a passive ``queue_declare`` with its message count;
        on Redis kombu's answer is the sum of the queue's priority lists
        (``name``, ``name:1`` … ``name:9``). A queue never declared holds
        nothing. Messages a worker has taken but not acknowledged are not
        counted. Raises ExecutorError when the broker cannot be reached.
        """
        names = sorted({q.name for q in self.app.conf.task_queues or []} | {"default"})
        depths: dict[str, int] = {}
        try:
            with self.app.connection_for_read() as conn:
                # One quick retry: kombu's default 2 s pause before it would use up
                # the whole health deadline on a broker that refuses at once.
                conn.ensure_connection(
                    max_retries=1, interval_start=0.2, interval_step=0.2, timeout=self.settings.broker_timeout
                )
                for name in names:
                    # a passive declare of a missing queue closes the channel: one channel per queue
                    channel = conn.channel()
                    try:
                        _, count, _ = channel.queue_declare(queue=name, passive=True)
                        depths[name] = int(count)
                    except conn.channel_errors:
                        depths[name] = 0
                    finally:
                        with contextlib.suppress(Exception):
                            channel.close()
        except Exception as e:  # kombu's OperationalError, ConnectionRefusedError, ...
            raise ExecutorError(f"the broker cannot be reached: {outage_reason(e)}", dependency="broker") from e
        return depths


def _send_error(e: BaseException) -> ExecutorError:
    return ExecutorError(f"the broker cannot take the task: {outage_reason(e)}", dependency="broker")


def _attempt(send: Callable[[TaskRecord], None], record: TaskRecord) -> ExecutorError | None:
    try:
        send(record)
    except ExecutorError as e:
        return e
    return None
