"""The pool's scheduling: which task goes to which worker process, and when it may be sent.

Tasks wait in their lane's fair line (``lanes.py``). A free worker's next task
is *staged*: its start (PROCESSING, ``attempts + 1``, holder, lease) goes to
the writer, and the task is sent to the worker only when the writer says the
start applied. A start that did not apply means the task finished meanwhile
(a cancel won the race), and it is never sent. Workers keep ``prefetch``
tasks sent or staged, so the write is hidden behind the running task; a
busy worker's next one is staged just before it is needed, so that the
choice is made as late as it can be.
"""

from __future__ import annotations

import collections
import functools
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Container
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.executors.base import started_change
from conveyor.executors.local.lanes import DEFAULT_LANE, Lane
from conveyor.executors.local.messages import Run
from conveyor.executors.local.workers import WorkerProcess
from conveyor.records import TaskRecord, now
from conveyor.registry import Registry, TaskType
from conveyor.stores.base import Change

if TYPE_CHECKING:
    from conveyor.stores.writer import BufferedWriter

__all__ = ["LaneScheduler", "OwnedTask"]


@dataclass(eq=False)
class OwnedTask:
    record: TaskRecord
    task_type: TaskType | None
    lane: Lane
    attempt: int = 0
    progress: float = 0.0
    #: asked to stop while PROCESSING: the worker gets the flag with the task
    cancel_requested: bool = False
    #: the worker it was chosen for while its start is being written
    staged_on: WorkerProcess | None = None
    #: when it was staged (monotonic)
    staged_at: float = 0.0


class LaneScheduler:
    """The scheduling half of ``LocalExecutor``: lines, staging, sending. Runs on the pool loop, under its lock."""

    registry: Registry
    writer: BufferedWriter
    worker_id: str
    lease_seconds: float
    prefetch: int
    tenant_max_workers: int
    _accepting: bool
    _owned: dict[str, OwnedTask]
    _inbox: deque[TaskRecord]
    _dropped: set[str]
    _lanes: dict[str, Lane]
    _delayed: list[tuple[float, int, str]]

    def _init_scheduling(self, sizes: dict[str, int]) -> None:
        self._lanes = {name: Lane(name, size) for name, size in sizes.items()}
        self._delayed = []
        #: when the loop next tops up a busy worker (monotonic; ``Lane.top_up_at``)
        self._next_top_up = math.inf
        self._seq = itertools.count()
        #: starts written (or refused) by the writer, for the loop to act on: (task, applied)
        self._confirmed: deque[tuple[OwnedTask, bool]] = deque()
        #: asked to stop while still in the inbox
        self._cancel_asked: set[str] = set()
        #: terminated while sent to a worker but not yet started there: killed if it starts
        self._terminating: set[str] = set()

    def _poke(self) -> None:
        raise NotImplementedError

    def _start_lane(self, lane: Lane) -> None:
        raise NotImplementedError

    def _worker_lost(self, w: WorkerProcess, reason: str) -> None:
        raise NotImplementedError

    def _lane_for(self, record: TaskRecord) -> Lane:
        return self._lanes.get(record.queue) or self._lanes[DEFAULT_LANE]

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
            owned = OwnedTask(r, task_type, self._lane_for(r), attempt=r.attempts, progress=r.progress)
            if r.id in self._cancel_asked:
                self._cancel_asked.discard(r.id)
                owned.cancel_requested = True
            self._owned[r.id] = owned
            if r.eta is not None and r.eta > t:
                heapq.heappush(self._delayed, (r.eta, next(self._seq), r.id))
            else:
                self._line_up(owned)

    def _line_up(self, owned: OwnedTask, *, front: bool = False) -> None:
        r = owned.record
        owned.lane.line.push(r.tenant, r.priority, -1 if front else next(self._seq), r.id)

    def _stage(self, w: WorkerProcess, owned: OwnedTask) -> None:
        """Choose ``w`` for a task and write its start; it is sent when the write lands (``_start_written``)."""
        owned.attempt += 1
        owned.staged_on = w
        owned.staged_at = time.monotonic()
        w.staged.append(owned.record.id)
        at = now()
        change = started_change(
            owned.record, attempt=owned.attempt, worker=self.worker_id, lease_until=at + self.lease_seconds, at=at
        )
        self.writer.put(change, urgent=True, on_applied=functools.partial(self._start_written, owned))

    def _start_written(self, owned: OwnedTask, applied: bool) -> None:
        """Writer thread: the start was written, or refused because the task had finished (cancelled)."""
        self._confirmed.append((owned, applied))
        self._poke()

    def _send_confirmed(self, t_mono: float) -> None:
        while self._confirmed:
            owned, applied = self._confirmed.popleft()
            w, owned.staged_on = owned.staged_on, None
            owned.lane.wrote_start(t_mono - owned.staged_at)
            task_id = owned.record.id
            if w is not None:
                w.staged.remove(task_id)
            if self._owned.get(task_id) is not owned:
                continue  # cancelled or terminated meanwhile
            if not applied:
                del self._owned[task_id]  # it finished before it could start: it never runs
            elif not self._accepting:
                pass  # stopping: it stays ours in the store, and the next pool takes it back
            elif w is None or w.dead:
                self._line_up(owned, front=True)
            else:
                self._send_run(w, owned, t_mono)

    def _send_run(self, w: WorkerProcess, owned: OwnedTask, t_mono: float) -> None:
        r = owned.record
        cancel = r.cancel_requested or owned.cancel_requested
        msg = Run(r.id, r.type, r.params, r.tenant, r.queue, owned.attempt, r.max_retries, cancel)
        try:
            first = w.send_run(msg)
        except (OSError, EOFError):
            self._line_up(owned, front=True)
            return
        if first:
            self._mark_started(w, t_mono)

    def _mark_started(self, w: WorkerProcess, t_mono: float, at: float | None = None) -> None:
        """The first task in a worker's queue starts as soon as it is there (``at``: when the one before ended)."""
        task_id = w.queue[0]
        if task_id in self._terminating:
            self._terminating.discard(task_id)
            self._worker_lost(w, "terminated on request")
            return
        owned = self._owned.get(task_id)
        w.running_since = t_mono
        limit = owned.task_type.time_limit if owned and owned.task_type else None
        w.deadline = t_mono + limit if limit else None
        if owned is None:
            return
        owned.progress = 0.0
        # Its start (and attempt) was written when it was sent; this is when it really began.
        self.writer.put(Change(task_id, {"started_at": at if at is not None else now()}))

    def _assign(self, t_mono: float) -> None:
        self._next_top_up = math.inf
        for lane in self._lanes.values():
            if not lane.line:
                continue
            if not lane.workers:
                self._start_lane(lane)
            live = lane.live_workers()
            shares = _TenantShares(self.tenant_max_workers, live, self._owned)
            # Fill idle workers first, then top up what each holds, each just before it is needed.
            for depth in range(lane.held_per_worker(self.prefetch)):
                for w in live:
                    if w.load != depth:
                        continue
                    if depth:
                        head = w.queue[0] if w.queue else w.staged[0]
                        first = self._owned.get(head)
                        due = lane.top_up_at(w, first.record.type if first else None)
                        if due > t_mono:
                            self._next_top_up = min(self._next_top_up, due)
                            continue
                    owned = self._next_in_line(lane, shares.blocked(w))
                    if owned is None:
                        break
                    shares.took(w, owned.record.tenant)
                    self._stage(w, owned)

    def _next_in_line(self, lane: Lane, blocked: Container[str] = ()) -> OwnedTask | None:
        while lane.line:
            task_id = lane.line.pop(blocked)
            if task_id is None:
                return None  # every tenant in line holds its share of the lane
            owned = self._owned.get(task_id)
            if owned is not None and owned.staged_on is None:
                return owned
            # else: cancelled while waiting
        return None


class _TenantShares:
    """Which tenants hold their share of a lane's workers (``tenant_max_workers``; 0: no limit).

    A worker counts for every tenant with a task sent or staged on it; topping
    up a worker a tenant already holds does not take it another one.
    """

    def __init__(self, limit: int, workers: list[WorkerProcess], owned: dict[str, OwnedTask]) -> None:
        self.limit = limit
        self.on: dict[WorkerProcess, set[str]] = {}
        self.held: collections.Counter[str] = collections.Counter()
        if not limit:
            return
        for w in workers:
            tenants = {o.record.tenant for task_id in (*w.queue, *w.staged) if (o := owned.get(task_id))}
            self.on[w] = tenants
            self.held.update(tenants)

    def blocked(self, w: WorkerProcess) -> Container[str]:
        if not self.limit:
            return ()
        mine = self.on[w]
        return {t for t, n in self.held.items() if n >= self.limit and t not in mine}

    def took(self, w: WorkerProcess, tenant: str) -> None:
        if self.limit and tenant not in self.on[w]:
            self.on[w].add(tenant)
            self.held[tenant] += 1
