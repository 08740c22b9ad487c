"""The Celery executor: Conveyor task types run as Celery tasks on Redis or RabbitMQ.

The store stays the truth; Celery only carries work. A message holds nothing
but the task id. A worker that receives it claims the run in the store
(``Store.start_run``: PENDING/RETRY, or PROCESSING whose lease lapsed) and
drops the message if it cannot — so a redelivered message, a revoked task
after a worker restart, or a reaper's second dispatch never runs a task twice
at once. While a task runs, its worker renews the lease; the reaper
re-dispatches tasks whose lease lapsed (their worker died), within about
``lease_seconds`` on either broker, without relying on Redis's one-hour
visibility timeout. Outcomes are written to the store before the message is
acknowledged (late acks), so nothing is lost between the two.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from conveyor.context import TaskContext
from conveyor.errors import ExecutorError, MissingExtra, StoreError
from conveyor.executors.base import outcome_change, progress_change, result_ttl_for, run_task
from conveyor.records import Status, TaskEvent, TaskRecord, now
from conveyor.registry import QUEUES, TaskType
from conveyor.stores.base import Change

if TYPE_CHECKING:
    from celery import Celery

    from conveyor.app import Conveyor

__all__ = ["CeleryExecutor", "create_celery_app"]

log = logging.getLogger("conveyor.executors.celery")

#: Redis has no native priorities: Celery emulates them with one list per step
REDIS_PRIORITY_STEPS = list(range(10))
#: how a send connects: one retry, quickly (kombu's failover options)
SEND_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
#: the remote-control command that kills the pool process running a task
TERMINATE_COMMAND = "conveyor_terminate"
#: how often the API process asks the workers who is alive (for /health and /api/v1/workers)
WORKERS_REFRESH = 3.0
#: while the store cannot be reached, a received task is put back for this long
STORE_RETRY_SECONDS = 2.0
#: a retry that waits for its countdown is reclaimed if its message has not run it this long after
RETRY_GRACE_SECONDS = 60.0


def _celery() -> Any:
    try:
        import celery
    except ImportError as e:  # pragma: no cover - installed with the extra
        raise MissingExtra("celery", "celery") from e
    return celery


class _StoreSink:
    """Progress goes through the worker's buffered writer; cancel flags are read from the store.

    The cancel flag is read at most once a second per task, so a task that
    checks ``ctx.cancelled`` in a tight loop does not hammer the store.
    """

    def __init__(self, conveyor: Conveyor) -> None:
        self.conveyor = conveyor
        self._checked: dict[str, tuple[float, bool]] = {}

    def report(self, task_id: str, progress: float, message: str, meta: dict[str, Any]) -> None:
        self.conveyor.writer.put(progress_change(task_id, progress, message, meta, now()))

    def started(self, record: TaskRecord) -> None:
        """The claim has just read the record: its flag is fresh, no need to ask for a second."""
        self._checked[record.id] = (time.monotonic(), record.cancel_requested)

    def finished(self, task_id: str) -> None:
        self._checked.pop(task_id, None)

    def is_cancelled(self, task_id: str) -> bool:
        checked = self._checked.get(task_id)
        t = time.monotonic()
        if checked is not None and (checked[1] or t - checked[0] < 1.0):
            return checked[1]
        try:
            record = self.conveyor.store.get(task_id)
        except StoreError:
            # The store is away: go on as last known, and ask again in a second.
            self._checked[task_id] = (t, False)
            return False
        flag = record is None or record.cancel_requested or record.state is Status.CANCELLED
        self._checked[task_id] = (t, flag)
        return flag


class _Leases:
    """Renews the leases of the tasks this worker process runs."""

    def __init__(self, conveyor: Conveyor, worker_id: str) -> None:
        self.conveyor = conveyor
        self.worker_id = worker_id
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ensure(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="conveyor-lease", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        lease = self.conveyor.settings.lease_seconds
        while True:
            time.sleep(max(0.5, lease / 3))
            try:
                self.conveyor.store.renew_leases(self.worker_id, now() + lease)
            except Exception as e:  # the next round tries again; the lease has slack
                log.warning("lease renewal failed: %s", e)


class _ThisProcess:
    """The worker id and lease keeper of the current process.

    Prefork children are forked after import: each must have an id of its
    own, or a live sibling would keep renewing a dead child's leases.
    """

    def __init__(self, conveyor: Conveyor) -> None:
        self.conveyor = conveyor
        self._pid: int | None = None
        self._lock = threading.Lock()
        self.worker_id = ""
        self.leases: _Leases | None = None

    def get(self) -> tuple[str, _Leases]:
        pid = os.getpid()
        with self._lock:
            if self._pid != pid or self.leases is None:
                self._pid = pid
                self.worker_id = f"celery:{socket.gethostname()}:{pid}:{os.urandom(3).hex()}"
                self.leases = _Leases(self.conveyor, self.worker_id)
            return self.worker_id, self.leases


def create_celery_app(conveyor: Conveyor) -> Celery:
    """A Celery app whose tasks are the registry's task types, by the same names."""
    celery = _celery()
    from kombu.entity import Queue as KombuQueue

    queue_cls: Any = KombuQueue

    s = conveyor.settings
    app = celery.Celery("conveyor", broker=s.broker_url, set_as_current=False)
    amqp = s.broker_url.startswith(("amqp", "pyamqp"))
    queues = sorted(set(QUEUES) | {t.queue for t in conveyor.registry})
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # the store keeps results; no result backend
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=s.celery_prefetch,
        # Task events cost a publish per task state; Flower switches them on
        # in the workers when it starts (its --enable-events, the default).
        worker_send_task_events=False,
        task_send_sent_event=False,
        broker_connection_retry_on_startup=True,
        task_default_queue="default",
        task_queues=[
            queue_cls(q, routing_key=q, queue_arguments={"x-max-priority": 9} if amqp else None) for q in queues
        ],
        task_default_priority=0,
        # Sending gives up after one quick reconnect: a submit during a broker
        # outage answers 503 (or falls back) at once instead of after kombu's
        # default retries. Consumers reconnect on their own, unaffected.
        broker_connection_timeout=2.0,
        broker_transport_options={
            **SEND_RETRY,
            **(
                {
                    "priority_steps": REDIS_PRIORITY_STEPS,
                    "sep": ":",
                    "queue_order_strategy": "priority",
                    "visibility_timeout": 12 * 3600,
                }
                if not amqp
                else {}
            ),
        },
        task_routes={t.name: {"queue": t.queue} for t in conveyor.registry},
        timezone="UTC",
        enable_utc=True,
    )
    sink = _StoreSink(conveyor)
    here = _ThisProcess(conveyor)
    for task_type in conveyor.registry:
        _register(app, conveyor, task_type, sink, here)
    app.conveyor = conveyor

    def flush_outcomes(**_: Any) -> None:
        # A pool process that stops (warm shutdown, max-tasks-per-child) writes
        # the outcomes still buffered before it goes.
        if conveyor.started_here:
            conveyor.writer.stop()

    from celery.signals import worker_process_shutdown

    worker_process_shutdown.connect(flush_outcomes, weak=False)
    _register_terminate_command()
    return app


def _register_terminate_command() -> None:
    """The remote-control command behind ``cancel(terminate=True)``, known to every worker of ours."""
    from celery.worker.control import control_command

    def conveyor_terminate(state: Any, task_id: str) -> dict[str, str]:
        from celery.worker import state as worker_state

        for request in list(worker_state.active_requests):
            if request.id == task_id:
                request.terminate(state.consumer.pool, signal="SIGTERM")
                return {"ok": f"terminated {task_id}"}
        return {"ok": "not running here"}

    conveyor_terminate.__name__ = TERMINATE_COMMAND
    control_command(args=[("task_id", str)], signature="<task_id>")(conveyor_terminate)


def _register(app: Celery, conveyor: Conveyor, task_type: TaskType, sink: _StoreSink, here: _ThisProcess) -> None:
    # Celery's hard limit kills the pool process; the soft limit is raised by
    # run_task itself (SIGALRM in the pool process's main thread).
    decorate: Any = app.task(
        name=task_type.name,
        # Bound to this app only: a second Conveyor in one process must not
        # inherit tasks that close over the first one's store.
        shared=False,
        bind=True,
        acks_late=True,
        time_limit=task_type.time_limit,
        ignore_result=True,
        # Celery's own retries only put a message back while the store is away
        # (our retries, with their backoff, are recorded in the store): unbounded.
        max_retries=None,
    )

    def run(self: Any, task_id: str) -> None:
        worker_id, leases = here.get()
        _run_one(conveyor, task_type, task_id, sink, leases, worker_id, self)

    decorate(run)


def _run_one(
    conveyor: Conveyor,
    task_type: TaskType,
    task_id: str,
    sink: _StoreSink,
    leases: _Leases,
    worker_id: str,
    celery_task: Any,
) -> None:
    conveyor.ensure_started_here()
    store = conveyor.store
    lease = conveyor.settings.lease_seconds
    t = now()
    try:
        record = store.start_run(task_id, worker_id, t + lease, t)
    except StoreError as e:
        # Without the store nobody can say whether this task may run. Acking
        # the message would lose it; a new message with a countdown keeps it.
        log.warning("store unavailable, task %s put back for %.0fs: %s", task_id, STORE_RETRY_SECONDS, e.message)
        raise celery_task.retry(countdown=STORE_RETRY_SECONDS) from e
    if record is None:
        log.info("task %s is not runnable here (finished, cancelled or held elsewhere); dropping", task_id)
        return
    leases.ensure()
    sink.started(record)
    ctx = TaskContext(
        task_id=task_id,
        task_type=task_type.name,
        tenant=record.tenant,
        attempt=record.attempts,
        queue=record.queue,
        sink=sink,
        workdir_root=conveyor.settings.data_dir,
        resources=conveyor.resources,
    )
    try:
        outcome = run_task(task_type, ctx, record.params, max_retries=record.max_retries)
    finally:
        sink.finished(task_id)
    change = outcome_change(
        record, outcome, at=now(), result_ttl=result_ttl_for(task_type, conveyor.settings.effective_result_ttl)
    )
    if outcome.state is Status.RETRY:
        # Nobody holds a waiting retry; its lease says when the reaper may send
        # it again if the retry message below never arrives.
        change.fields.update(worker=None, lease_expires_at=change.fields["eta"] + RETRY_GRACE_SECONDS)
    else:
        change.fields["worker"] = worker_id
    conveyor.writer.put(change)
    # A final outcome is written by the writer thread within a flush interval,
    # batched with its neighbours', after the message is acknowledged: if this
    # process dies in between, the lease lapses and the task runs again
    # (at-least-once; the store still records one outcome). A retry is
    # written first, so that its message finds it waiting.
    if outcome.state is Status.RETRY:
        try:
            conveyor.writer.flush()
        except Exception as e:
            log.warning("retry of task %s not written yet (store unavailable): %s", task_id, e)
        try:
            celery_task.apply_async(
                args=[task_id],
                task_id=task_id,
                countdown=outcome.retry_in or 0,
                queue=record.queue,
                priority=record.priority,
            )
        except Exception as e:
            log.warning("retry of task %s not queued (broker unavailable); the reaper will send it: %s", task_id, e)


class CeleryExecutor:
    """Dispatches to Celery workers; re-dispatches tasks whose worker died (lease lapsed)."""

    name = "celery"

    def __init__(self, conveyor: Conveyor) -> None:
        self.conveyor = conveyor
        self.app = create_celery_app(conveyor)
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self.redispatched = 0
        # Asking workers takes a full broadcast timeout; a background thread
        # asks every WORKERS_REFRESH seconds so /health and /workers answer at once.
        self._seen: list[dict[str, Any]] | None = None
        self._seen_at = 0.0
        self._seen_lock = threading.Lock()
        self._monitor: threading.Thread | None = None

    def route(self, task_type: TaskType) -> str:
        return "celery"

    def claim_fields(self, engine: str) -> dict[str, Any]:
        return {}

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
        self.app.close()

    def send(self, record: TaskRecord) -> None:
        try:
            self.app.send_task(
                record.type,
                args=[record.id],
                task_id=record.id,
                queue=record.queue,
                priority=record.priority,
                countdown=max(0.0, record.eta - now()) if record.eta else None,
                # One quick retry: a pooled connection the broker has closed (a
                # restart) is replaced; a broker that is down fails at once.
                retry=True,
                retry_policy=SEND_RETRY,
            )
        except Exception as e:  # kombu raises OperationalError, ConnectionRefusedError, ...
            raise ExecutorError(f"the broker cannot take the task: {e}") from e

    def dispatch(self, record: TaskRecord) -> None:
        self.send(record)

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
        """Queue again the celery tasks whose lease lapsed; returns how many.

        A PROCESSING task's lease lapses when its worker died; a RETRY's when
        its retry message has not run it long after its countdown (the worker
        could not send it). A second message for a task is harmless:
        ``start_run`` lets only one of them run it.
        """
        store = self.conveyor.store
        t = now()
        lapsed = store.recoverable("celery", t, states=(Status.PROCESSING, Status.RETRY))
        sent = 0
        for r in lapsed:
            message = (
                "Worker lost; queued again" if r.state is Status.PROCESSING else "Retry not delivered; queued again"
            )
            # Conditional on PROCESSING: of several reapers (one per API
            # replica) only one gets the record back, and only it sends.
            requeued = store.reset(
                r.id,
                {
                    "state": Status.PENDING,
                    "worker": None,
                    "lease_expires_at": None,
                    "message": message,
                    "updated_at": t,
                },
                [r.state],
            )
            if requeued is None:
                continue
            store.apply([Change(r.id, {}, [TaskEvent(r.id, t, Status.PENDING, r.progress, message, kind="state")])])
            log.warning("task %s lost its worker; dispatching it again", r.id)
            self.send(requeued.replace(eta=None))
            self.redispatched += 1
            sent += 1
        return sent

    def _reap_loop(self) -> None:
        interval = max(1.0, self.conveyor.settings.lease_seconds / 3)
        while not self._stop.wait(interval):
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
        status = "ok" if broker["status"] == "ok" and alive else ("degraded" if broker["status"] == "ok" else "down")
        return {"status": status, "kind": "celery", "broker": broker, "workers_alive": alive}

    def broker_health(self) -> dict[str, Any]:
        url = self.conveyor.settings.broker_url
        kind = "rabbitmq" if url.startswith(("amqp", "pyamqp")) else "redis"
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
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
        return {"broker": self.conveyor.settings.broker_url.split("@")[-1], "redispatched": self.redispatched}

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
                conn.ensure_connection(max_retries=1, timeout=2)
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
            raise ExecutorError(f"the broker cannot be reached: {e}") from e
        return depths
