"""The local pool: the scheduler in the API process that owns a set of worker processes.

Why processes and not threads: a thread cannot be killed, so a task stuck in
C code or an endless loop would hold its slot forever and ignore its hard
time limit. Each worker process (``child.py``) runs one task at a time; when
a task passes its hard limit, its process is killed and replaced, and the
pool goes on.

The pool keeps every task it owns in memory (a fair line per lane, a
delayed heap, per-worker queues) and is the only one that writes to the
store, through the BufferedWriter. Workers speak over one duplex pipe each
(``Run`` → ``Done``/``Progress``) and one control pipe (``Cancel``); no worker
touches the task store. Lanes (``lanes.py``) give each queue worker processes
of its own and take tenants in turn.

A task is handed to a worker only once its start is written: PROCESSING,
``attempts + 1``, holder and lease, in the writer's next batch. So every
execution is counted before its body can run (a crash can make attempts
count one that never ran, never miss one that did), and a cancel either
finds the task waiting (CANCELLED, and its start write is then refused) or
finds it PROCESSING and asks the worker to stop it.

Durability: every task this pool owns carries its worker id and a lease in
the store, renewed in one statement per interval (``leases.py``). After a
crash, the next pool on this host sees that the holder's process is gone and
takes the tasks back at once; a pool on another host takes them when the
lease expires.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
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
)
from conveyor.executors.leases import LeaseKeeper, renew_interval
from conveyor.executors.local.lanes import Lane, lane_sizes
from conveyor.executors.local.messages import Done, FromWorker, Progress
from conveyor.executors.local.scheduler import LaneScheduler, OwnedTask
from conveyor.executors.local.waker import Waker
from conveyor.executors.local.workers import HOST, LIVE_HERE, WorkerProcess, holder_dead, local_worker_id
from conveyor.records import FINAL_STATES, Status, TaskRecord, now
from conveyor.registry import Registry, TaskType
from conveyor.stores.base import Store
from conveyor.stores.writer import BufferedWriter

if TYPE_CHECKING:
    from conveyor.resources import Resources

__all__ = ["LocalExecutor", "local_worker_id"]

log = logging.getLogger("conveyor.executors.local")
#: tasks one recovery query takes back; the scan goes on while pages come back full
RECOVER_PAGE = 1000


class LocalExecutor(LaneScheduler):
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
        queues: Mapping[str, int] | None = None,
        prefetch: int = 2,
        tenant_max_workers: int = 0,
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
        self.tenant_max_workers = tenant_max_workers
        self.lease_seconds = lease_seconds
        self.result_ttl = result_ttl
        self.shutdown_timeout = shutdown_timeout
        self.worker_id = worker_id or local_worker_id()
        self.on_worker_start = on_worker_start
        self._mp = multiprocessing.get_context("fork")
        self._lock = threading.Lock()
        self._owned: dict[str, OwnedTask] = {}
        self._inbox: deque[TaskRecord] = deque()
        self._dropped: set[str] = set()
        sizes = lane_sizes(queues or {}, (t.queue for t in registry), concurrency)
        self._init_scheduling(sizes)
        self._indexes = itertools.count()
        self._waker: Waker | None = None
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

    def claim_fields(self, engine: str, *, due: float | None = None) -> dict[str, Any]:
        return {"worker": self.worker_id, "lease_expires_at": now() + self.lease_seconds}

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._accepting = True
        LIVE_HERE.add(self.worker_id)
        self._waker = Waker()
        # Every lane's processes are forked now, while this process's threads are idle. A fork
        # later, when its first task comes, may copy a lock another thread holds at that moment
        # (SQLite's own mutexes among them) and the child hangs on its first connect.
        for lane in self._lanes.values():
            self._start_lane(lane)
        self._loop_thread = threading.Thread(target=self._loop, name="conveyor-pool", daemon=True)
        self._loop_thread.start()
        self._keeper.start()

    def dispatch(self, record: TaskRecord) -> None:
        if not self._accepting:
            raise ExecutorError("the local worker pool is not running")
        self._adopt([record])

    def dispatch_many(self, records: Sequence[TaskRecord]) -> list[ExecutorError | None]:
        if not self._accepting:
            return [ExecutorError("the local worker pool is not running")] * len(records)
        self._adopt(list(records))  # one wake-up of the pool loop for the lot
        return [None] * len(records)

    def cancel(self, record: TaskRecord) -> None:
        """The manager either cancelled a waiting task (``record`` is CANCELLED) or flagged a started one."""
        with self._lock:
            owned = self._owned.get(record.id)
            if owned is None:
                if any(r.id == record.id for r in list(self._inbox)):
                    if record.state in FINAL_STATES:
                        self._dropped.add(record.id)
                    else:
                        self._cancel_asked.add(record.id)
                return
            owned.cancel_requested = True
            for w in self._all_workers():
                if record.id in w.queue and not w.dead:
                    w.cancel(record.id)
                    return
            if record.state in FINAL_STATES:
                # Waiting here or being staged: its start write will be refused.
                del self._owned[record.id]

    def terminate(self, record: TaskRecord) -> None:
        """Kill the worker process running this task (its record already says CANCELLED); the pool replaces it."""
        with self._lock:
            # Forgotten first, so that the lost worker earns it no retry and a staged start is not sent.
            self._owned.pop(record.id, None)
            for w in self._all_workers():
                if w.dead or record.id not in w.queue:
                    continue
                if w.queue[0] == record.id:
                    self._worker_lost(w, "terminated on request")
                else:
                    # Sent ahead: the flag stops it before its body; if it starts anyway it is killed.
                    self._terminating.add(record.id)
                    w.cancel(record.id)
                return

    def health(self) -> dict[str, Any]:
        started = self._all_workers()
        alive = sum(1 for w in started if w.alive)
        status = "ok" if self._running and alive == len(started) else ("degraded" if alive else "down")
        return {"status": status, "kind": "local", "workers_alive": alive, "concurrency": self.concurrency}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            workers = self._all_workers()
            running = sum(1 for w in workers if w.queue and w.running_since is not None)
            return {
                "worker_id": self.worker_id,
                "concurrency": self.concurrency,
                "lanes": {lane.name: lane.size for lane in self._lanes.values()},
                "running": running,
                "ready": sum(len(lane.line) for lane in self._lanes.values()) + len(self._inbox),
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
            return [w.info(self.worker_id) for w in self._all_workers()]

    def stop(self, *, graceful: bool = True) -> None:
        if not self._running:
            return
        self._accepting = False
        if graceful:
            deadline = time.monotonic() + self.shutdown_timeout
            while time.monotonic() < deadline:
                with self._lock:
                    # Stop feeding workers, and take back what they have not started.
                    for lane in self._lanes.values():
                        lane.line.clear()
                    self._inbox.clear()
                    busy = any(w.load for w in self._all_workers() if not w.dead)
                if not busy:
                    break
                time.sleep(0.02)
        self._running = False
        self._poke()
        if self._loop_thread is not None:
            self._loop_thread.join(5)
        self._keeper.stop(5)
        workers = self._all_workers()
        for w in workers:
            w.ask_to_stop()
        for w in workers:
            w.close(graceful=graceful)
        for lane in self._lanes.values():
            lane.workers.clear()
        if self._waker is not None:
            self._waker.close()
            self._waker = None
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
            at = now()
            # A lease that lapsed while its holder runs in this process (a database
            # that hung past it) is no sign of a lost task: that pool still owns it,
            # perhaps with its outcome waiting in the writer. Never adopt it.
            page = self.store.recoverable("local", at, dead, limit=RECOVER_PAGE)
            taken = self._recover_page([r for r in page if r.worker not in LIVE_HERE], at, dead)
            total += taken
            # A full page with nothing taken (all held here, or claimed by a replica) would come back the same.
            if len(page) < RECOVER_PAGE or not taken or not self._running:
                return total
            if time.monotonic() - renewed > renew_interval(self.lease_seconds):
                self._keeper.renew()
                renewed = time.monotonic()

    def _recover_page(self, found: list[TaskRecord], at: float, dead: list[str]) -> int:
        if not found:
            return 0
        claimed = self.store.claim(
            [r.id for r in found], self.worker_id, now() + self.lease_seconds, at=at, dead_workers=dead
        )
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

    def _all_workers(self) -> list[WorkerProcess]:
        return [w for lane in self._lanes.values() for w in lane.workers]

    def _start_lane(self, lane: Lane) -> None:
        lane.workers = [self._spawn(lane, slot) for slot in range(lane.size)]

    def _spawn(self, lane: Lane, slot: int) -> WorkerProcess:
        return WorkerProcess.spawn(
            self._mp, next(self._indexes), self.registry, self.data_dir, self.on_worker_start, lane=lane.name, slot=slot
        )

    def _adopt(self, records: list[TaskRecord]) -> None:
        # A deque append needs no lock: submitters never wait for the pool loop.
        self._inbox.extend(records)
        self._poke()

    def _poke(self) -> None:
        waker = self._waker
        if waker is not None:
            waker.poke()

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
            retry = OwnedTask(
                record.replace(eta=eta, attempts=owned.attempt, state=Status.RETRY),
                owned.task_type,
                owned.lane,
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
        self._terminating.difference_update(queue)
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
                    self._line_up(o, front=True)
        if self._running:
            self.restarts += 1
            lane = self._lanes[w.lane]
            lane.workers[w.slot] = self._spawn(lane, w.slot)

    def _handle(self, w: WorkerProcess, msg: FromWorker, t_mono: float) -> None:
        if isinstance(msg, Done):
            if w.running_since is not None:
                owned = self._owned.get(msg.task_id)
                self._lanes[w.lane].ran(t_mono - w.running_since, owned.record.type if owned else None)
            w.done(msg.task_id)
            self._finish(msg.task_id, Outcome(Status(msg.state), msg.result, msg.error, msg.retry_in), msg.at)
            if w.queue:
                self._mark_started(w, t_mono, msg.at)
        elif isinstance(msg, Progress):
            owned = self._owned.get(msg.task_id)
            if owned is not None:
                owned.progress = msg.progress
                self.writer.put(progress_change(msg.task_id, msg.progress, msg.message, msg.meta, msg.at))

    def _loop(self) -> None:
        while self._running:
            t_mono = time.monotonic()
            timeout = 0.25
            with self._lock:
                workers = self._all_workers()
                if self._delayed:
                    timeout = min(timeout, max(0.0, self._delayed[0][0] - now()))
                for w in workers:
                    if w.deadline is not None:
                        timeout = min(timeout, max(0.0, w.deadline - t_mono))
                timeout = min(timeout, max(0.0, self._next_top_up - t_mono))
                waker = self._waker
                wake = waker.socket if waker is not None else None
                conns: list[Any] = [wake] + [w.conn for w in workers if not w.dead]
            try:
                ready = multiprocessing.connection.wait(conns, timeout)
            except OSError:
                ready = []
            t_mono = time.monotonic()
            with self._lock:
                workers = self._all_workers()
                for obj in ready:
                    if obj is wake:
                        if waker is not None:
                            waker.consume()
                        continue
                    sender = next((w for w in workers if w.conn is obj), None)
                    if sender is None or sender.dead:
                        continue
                    try:
                        while not sender.dead and sender.conn.poll():
                            self._handle(sender, sender.conn.recv(), t_mono)
                    except (EOFError, OSError):
                        if not sender.dead:
                            sender.process.join(0.5)
                            code = sender.process.exitcode
                            self._worker_lost(sender, f"worker process died (exit code {code}) while running this task")
                self._drain_inbox()
                self._send_confirmed(t_mono)
                t = now()
                while self._delayed and self._delayed[0][0] <= t:
                    _, _, task_id = heapq.heappop(self._delayed)
                    owned = self._owned.get(task_id)
                    if owned is not None:
                        self._line_up(owned)
                for w in self._all_workers():
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
