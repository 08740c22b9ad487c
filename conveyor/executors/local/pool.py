"""The local pool: the scheduler in the API process that owns a set of worker processes.

Why processes and not threads: a thread cannot be killed, so a task stuck in
C code or an endless loop would hold its slot forever and ignore its hard
time limit. Each worker process (``child.py``) runs one task at a time; when
a task passes its hard limit, its process is killed and replaced, and the
pool goes on.

The pool keeps every task it owns in memory (ready heap, delayed heap,
per-worker queues) and is the only one that writes to the store, through the
BufferedWriter. Workers speak over one duplex pipe each (``Run`` →
``Done``/``Progress``) and one control pipe (``Cancel``); no worker touches
the task store.

Durability: every task this pool owns carries its worker id and a lease in
the store, renewed in one statement per interval (``leases.py``). After a
crash, the next pool on this host sees that the holder's process is gone and
takes the tasks back at once; a pool on another host takes them when the
lease expires.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import ExecutorError
from conveyor.executors.base import (
    MAX_REDELIVERIES,
    Outcome,
    failure_outcome,
    outcome_change,
    progress_change,
    result_ttl_for,
    started_change,
)
from conveyor.executors.leases import LeaseKeeper, renew_interval
from conveyor.executors.local.messages import Done, FromWorker, Progress, Run
from conveyor.executors.local.workers import HOST, LIVE_HERE, WorkerProcess, holder_dead, local_worker_id
from conveyor.records import Status, TaskRecord, now
from conveyor.registry import Registry, TaskType
from conveyor.stores.base import Store
from conveyor.stores.writer import BufferedWriter

if TYPE_CHECKING:
    from conveyor.resources import Resources

__all__ = ["LocalExecutor", "local_worker_id"]

log = logging.getLogger("conveyor.executors.local")
#: tasks one recovery query takes back; the scan goes on while pages come back full
RECOVER_PAGE = 1000


@dataclass(eq=False)
class _Owned:
    record: TaskRecord
    task_type: TaskType | None
    attempt: int = 0
    progress: float = 0.0


class LocalExecutor:
    """A bounded pool of worker processes with priorities, delays and hard time limits."""

    name = "local"

    def __init__(
        self,
        *,
        registry: Registry,
        store: Store,
        writer: BufferedWriter,
        data_dir: Path,
        concurrency: int = 2,
        prefetch: int = 2,
        lease_seconds: float = 30.0,
        result_ttl: float = 0.0,
        shutdown_timeout: float = 30.0,
        worker_id: str | None = None,
        on_worker_start: Callable[[], Resources | None] | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.writer = writer
        self.data_dir = data_dir
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.lease_seconds = lease_seconds
        self.result_ttl = result_ttl
        self.shutdown_timeout = shutdown_timeout
        self.worker_id = worker_id or local_worker_id()
        self.on_worker_start = on_worker_start
        self._mp = multiprocessing.get_context("fork")
        self._lock = threading.Lock()
        self._owned: dict[str, _Owned] = {}
        self._inbox: deque[TaskRecord] = deque()
        self._dropped: set[str] = set()
        self._poked = False
        self._ready: list[tuple[int, int, str]] = []
        self._delayed: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._workers: list[WorkerProcess] = []
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._running = False
        self._accepting = False
        self._loop_thread: threading.Thread | None = None
        self._next_recover = 0.0
        self._keeper = LeaseKeeper(
            store,
            self.worker_id,
            lease_seconds,
            first=self._first_recover,
            each_round=self._recover_when_due,
            failure="lease upkeep failed",
        )
        self.processed = 0
        self.failed = 0
        self.restarts = 0

    # -- the Executor contract ---------------------------------------------

    def route(self, task_type: TaskType) -> str:
        return "local"

    def claim_fields(self, engine: str) -> dict[str, Any]:
        return {"worker": self.worker_id, "lease_expires_at": now() + self.lease_seconds}

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._accepting = True
        LIVE_HERE.add(self.worker_id)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        for i in range(self.concurrency):
            self._workers.append(self._spawn(i))
        self._loop_thread = threading.Thread(target=self._loop, name="conveyor-pool", daemon=True)
        self._loop_thread.start()
        self._keeper.start()

    def dispatch(self, record: TaskRecord) -> None:
        if not self._accepting:
            raise ExecutorError("the local worker pool is not running")
        self._adopt([record])

    def cancel(self, record: TaskRecord) -> None:
        with self._lock:
            owned = self._owned.get(record.id)
            if owned is None:
                if any(r.id == record.id for r in list(self._inbox)):
                    self._dropped.add(record.id)
                return
            for w in self._workers:
                if record.id in w.queue and not w.dead:
                    w.cancel(record.id)
                    return
            # Waiting here: the manager has already written CANCELLED.
            del self._owned[record.id]

    def terminate(self, record: TaskRecord) -> None:
        """Kill the worker process running this task; the pool replaces it."""
        with self._lock:
            for w in self._workers:
                if w.queue and w.queue[0] == record.id and not w.dead:
                    # Forgotten first, so that the lost worker earns it no retry.
                    self._owned.pop(record.id, None)
                    self._worker_lost(w, "terminated on request")
                    return

    def health(self) -> dict[str, Any]:
        alive = sum(1 for w in self._workers if w.alive)
        status = "ok" if self._running and alive == self.concurrency else ("degraded" if alive else "down")
        return {"status": status, "kind": "local", "workers_alive": alive, "concurrency": self.concurrency}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            running = sum(1 for w in self._workers if w.queue and w.running_since is not None)
            return {
                "worker_id": self.worker_id,
                "concurrency": self.concurrency,
                "running": running,
                "ready": len(self._ready) + len(self._inbox),
                "delayed": len(self._delayed),
                "owned": len(self._owned),
                "processed": self.processed,
                "failed": self.failed,
                "worker_restarts": self.restarts,
            }

    def broker_depths(self) -> None:
        """No broker: the store's counts are the queue."""
        return None

    def workers(self) -> list[dict[str, Any]]:
        with self._lock:
            return [w.info(self.worker_id) for w in self._workers]

    def stop(self, *, graceful: bool = True) -> None:
        if not self._running:
            return
        self._accepting = False
        if graceful:
            deadline = time.monotonic() + self.shutdown_timeout
            while time.monotonic() < deadline:
                with self._lock:
                    # Stop feeding workers, and take back what they have not started.
                    self._ready.clear()
                    self._inbox.clear()
                    busy = any(w.queue for w in self._workers if not w.dead)
                if not busy:
                    break
                time.sleep(0.02)
        self._running = False
        self._poke()
        if self._loop_thread is not None:
            self._loop_thread.join(5)
        self._keeper.stop(5)
        for w in self._workers:
            w.ask_to_stop()
        for w in self._workers:
            w.close(graceful=graceful)
        self._workers.clear()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None
        LIVE_HERE.discard(self.worker_id)
        # Tasks still owned stay in the store under our id; the next pool on
        # this host sees we are gone and takes them back.

    # -- recovery --------------------------------------------------------------

    def recover(self) -> int:
        """Take back unfinished local tasks whose holder is gone, page after page; returns how many.

        Every page is handed to the workers as soon as it is claimed, and the
        scan goes on until a page comes back short: a dead pool's backlog is
        taken back at once rather than one page per recovery round. Leases of
        what is already held are renewed along the way, so a long scan never
        lets the first pages lapse.
        """
        dead = [w for w in self.store.held_by(f"local:{HOST}:") if w != self.worker_id and holder_dead(w)]
        total = 0
        renewed = time.monotonic()
        while True:
            found = self.store.recoverable("local", now(), dead, limit=RECOVER_PAGE)
            total += self._recover_page(found)
            if len(found) < RECOVER_PAGE or not self._running:
                return total
            if time.monotonic() - renewed > renew_interval(self.lease_seconds):
                self._keeper.renew()
                renewed = time.monotonic()

    def _recover_page(self, found: list[TaskRecord]) -> int:
        if not found:
            return 0
        claimed = self.store.claim([r.id for r in found], self.worker_id, now() + self.lease_seconds)
        keep: list[TaskRecord] = []
        for r in claimed:
            if r.id in self._owned:
                continue
            if r.state is Status.PROCESSING:
                limit = r.max_retries + 1 + MAX_REDELIVERIES
                if r.attempts >= limit:
                    self._finish_without_run(
                        r, failure_outcome(f"worker died {r.attempts} times while running this task")
                    )
                    continue
                log.info("re-running interrupted task %s (attempt %d)", r.id, r.attempts)
            keep.append(r)
        self._adopt(keep)
        return len(claimed)

    # -- internals -------------------------------------------------------------

    def _adopt(self, records: list[TaskRecord]) -> None:
        # A deque append needs no lock: submitters never wait for the pool loop.
        self._inbox.extend(records)
        self._poke()

    def _drain_inbox(self) -> None:
        """Move submitted records into the pool's queues (pool loop, under the lock)."""
        t = now()
        while self._inbox:
            r = self._inbox.popleft()
            if r.id in self._owned:
                continue
            if r.id in self._dropped:
                self._dropped.discard(r.id)
                continue
            task_type = self.registry.get(r.type) if r.type in self.registry else None
            self._owned[r.id] = _Owned(r, task_type, attempt=r.attempts, progress=r.progress)
            if r.eta is not None and r.eta > t:
                heapq.heappush(self._delayed, (r.eta, next(self._seq), r.id))
            else:
                heapq.heappush(self._ready, (-r.priority, next(self._seq), r.id))

    def _poke(self) -> None:
        # One wake-up byte at a time is enough; the loop clears the flag when it wakes.
        if self._poked or self._wake_w is None:
            return
        self._poked = True
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"x")

    def _spawn(self, index: int) -> WorkerProcess:
        return WorkerProcess.spawn(self._mp, index, self.registry, self.data_dir, self.on_worker_start)

    def _send_run(self, w: WorkerProcess, owned: _Owned, t_mono: float) -> None:
        r = owned.record
        attempt = owned.attempt + 1
        if w.send_run(Run(r.id, r.type, r.params, r.tenant, r.queue, attempt, r.max_retries, r.cancel_requested)):
            self._mark_started(w, t_mono)

    def _mark_started(self, w: WorkerProcess, t_mono: float) -> None:
        """The first task in a worker's queue starts as soon as it is there."""
        task_id = w.queue[0]
        owned = self._owned.get(task_id)
        w.running_since = t_mono
        limit = owned.task_type.time_limit if owned and owned.task_type else None
        w.deadline = t_mono + limit if limit else None
        if owned is None:
            return
        owned.attempt += 1
        owned.progress = 0.0
        self.writer.put(
            started_change(
                owned.record,
                attempt=owned.attempt,
                worker=self.worker_id,
                lease_until=now() + self.lease_seconds,
                at=now(),
            )
        )

    def _finish(self, task_id: str, outcome: Outcome, at: float) -> None:
        owned = self._owned.pop(task_id, None)
        if owned is None:
            return
        self.processed += 1
        if outcome.state is Status.FAILURE:
            self.failed += 1
        record = owned.record
        change = outcome_change(
            record,
            outcome,
            at=at,
            result_ttl=result_ttl_for(owned.task_type, self.result_ttl),
            progress=owned.progress,
        )
        self.writer.put(change)
        if outcome.state is Status.RETRY:
            eta = change.fields["eta"]
            retry = _Owned(
                record.replace(eta=eta, attempts=owned.attempt, state=Status.RETRY),
                owned.task_type,
                attempt=owned.attempt,
            )
            self._owned[task_id] = retry
            heapq.heappush(self._delayed, (eta, next(self._seq), task_id))

    def _finish_without_run(self, record: TaskRecord, outcome: Outcome) -> None:
        task_type = self.registry.get(record.type) if record.type in self.registry else None
        self.writer.put(
            outcome_change(record, outcome, at=now(), result_ttl=result_ttl_for(task_type, self.result_ttl))
        )

    def _worker_lost(self, w: WorkerProcess, reason: str) -> None:
        """A worker process died or was killed: settle its tasks and replace it."""
        queue = w.lost()
        if queue:
            running, rest = queue[0], queue[1:]
            owned = self._owned.get(running)
            if owned is not None:
                if owned.attempt <= owned.record.max_retries and "time limit" not in reason:
                    task_type = owned.task_type
                    delay = task_type.retry_delay(owned.attempt) if task_type else 1.0
                    outcome = Outcome(
                        Status.RETRY,
                        error={"type": "WorkerLost", "message": reason, "traceback": ""},
                        retry_in=delay,
                    )
                else:
                    error_type = "TimeLimitExceeded" if "time limit" in reason else "WorkerLost"
                    outcome = failure_outcome(reason, error_type)
                self._finish(running, outcome, now())
            # Tasks that had not started go back to the front of the line.
            for task_id in rest:
                o = self._owned.get(task_id)
                if o is not None:
                    heapq.heappush(self._ready, (-o.record.priority, -1, task_id))
        if self._running:
            self.restarts += 1
            self._workers[w.index] = self._spawn(w.index)

    def _handle(self, w: WorkerProcess, msg: FromWorker, t_mono: float) -> None:
        if isinstance(msg, Done):
            w.done(msg.task_id)
            self._finish(msg.task_id, Outcome(Status(msg.state), msg.result, msg.error, msg.retry_in), msg.at)
            if w.queue:
                self._mark_started(w, t_mono)
        elif isinstance(msg, Progress):
            owned = self._owned.get(msg.task_id)
            if owned is not None:
                owned.progress = msg.progress
                self.writer.put(progress_change(msg.task_id, msg.progress, msg.message, msg.meta, msg.at))

    def _assign(self, t_mono: float) -> None:
        if not self._ready:
            return
        live = [w for w in self._workers if not w.dead]
        if not live:
            return
        # Fill idle workers first, then top up the queues to `prefetch`.
        for depth in range(self.prefetch):
            for w in live:
                if not self._ready:
                    return
                if len(w.queue) != depth:
                    continue
                while self._ready:
                    _, _, task_id = heapq.heappop(self._ready)
                    owned = self._owned.get(task_id)
                    if owned is None:
                        continue  # cancelled while waiting
                    try:
                        self._send_run(w, owned, t_mono)
                    except (OSError, EOFError):
                        heapq.heappush(self._ready, (-owned.record.priority, -1, task_id))
                    break

    def _loop(self) -> None:
        while self._running:
            t_mono = time.monotonic()
            timeout = 0.25
            with self._lock:
                if self._delayed:
                    timeout = min(timeout, max(0.0, self._delayed[0][0] - now()))
                for w in self._workers:
                    if w.deadline is not None:
                        timeout = min(timeout, max(0.0, w.deadline - t_mono))
                conns: list[Any] = [self._wake_r] + [w.conn for w in self._workers if not w.dead]
            wake = self._wake_r
            try:
                ready = multiprocessing.connection.wait(conns, timeout)
            except OSError:
                ready = []
            t_mono = time.monotonic()
            with self._lock:
                for obj in ready:
                    if obj is wake:
                        self._poked = False
                        with contextlib.suppress(BlockingIOError, OSError):
                            while wake is not None and wake.recv(4096):
                                pass
                        continue
                    sender = next((w for w in self._workers if w.conn is obj), None)
                    if sender is None or sender.dead:
                        continue
                    try:
                        while sender.conn.poll():
                            self._handle(sender, sender.conn.recv(), t_mono)
                    except (EOFError, OSError):
                        sender.process.join(0.5)
                        code = sender.process.exitcode
                        self._worker_lost(sender, f"worker process died (exit code {code}) while running this task")
                self._drain_inbox()
                t = now()
                while self._delayed and self._delayed[0][0] <= t:
                    _, _, task_id = heapq.heappop(self._delayed)
                    owned = self._owned.get(task_id)
                    if owned is not None:
                        heapq.heappush(self._ready, (-owned.record.priority, next(self._seq), task_id))
                for w in list(self._workers):
                    if w.dead:
                        continue
                    if w.deadline is not None and t_mono >= w.deadline:
                        owned = self._owned.get(w.queue[0]) if w.queue else None
                        limit = owned.task_type.time_limit if owned and owned.task_type else 0
                        log.warning("task %s passed its hard time limit; killing its worker", w.queue[0])
                        self._worker_lost(w, f"hard time limit of {limit:g}s exceeded; the task was killed")
                    elif not w.process.is_alive():
                        self._worker_lost(w, f"worker process died (exit code {w.process.exitcode})")
                if self._accepting:
                    self._assign(t_mono)

    def _first_recover(self) -> None:
        """The lease keeper's first round: take back what a dead pool left, before any renewal."""
        try:
            self.recover()
        finally:
            self._next_recover = time.monotonic() + self.lease_seconds / 2

    def _recover_when_due(self) -> None:
        """After a renewal: take over tasks whose holder died (other pools), every half lease."""
        if time.monotonic() >= self._next_recover:
            self.recover()
            self._next_recover = time.monotonic() + self.lease_seconds / 2
