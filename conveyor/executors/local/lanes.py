"""Lanes of the local pool: worker processes of their own per queue, and a fair line in each.

A lane is a set of worker processes that only run tasks of its queues, so a
long task on one queue never holds up another queue: a 30 s ``system.sleep``
on ``default`` leaves an upload's lane free for it. Within a
lane the line is fair across tenants: the tenants with ready tasks take turns
(round robin), and each tenant's own tasks go by priority, then by arrival.
A tenant that floods the lane with 200 tasks makes another tenant's task wait
for a running task to end, not for the 200: a newly ready tenant goes first,
and a busy worker is handed its next task only just before it is free
(``Lane.top_up_at``). ``tenant_max_workers`` caps the workers of a lane one
tenant may hold, so that another tenant does not even wait for that.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field

from conveyor.executors.local.workers import WorkerProcess

__all__ = ["DEFAULT_LANE", "FairLine", "Lane", "lane_sizes"]

#: the lane of the ``default`` queue, and of every queue that has no lane of its own
DEFAULT_LANE = "default"
#: the most tasks one worker holds (staged or sent), however short its tasks are
MAX_HELD = 32
#: a busy worker's next task is chosen this long (beyond two start writes) before its running one
#: is expected to end
TOP_UP_SLACK = 0.002
#: what a task type's first run is taken to last (seconds), before one has been timed
FIRST_RUN = 1.0


def lane_sizes(configured: Mapping[str, int], declared: Iterable[str], concurrency: int) -> dict[str, int]:
    """Worker processes per lane.

    ``configured`` (``CONVEYOR_QUEUES``) is taken as the whole layout, with
    ``default`` at ``concurrency`` unless listed. Unset, ``default`` gets
    ``concurrency`` and every other queue in ``declared`` (the loaded task
    types' queues) one process of its own; every lane's processes are forked
    when the pool starts (see ``LocalExecutor.start``).
    """
    sizes = dict(configured) if configured else dict.fromkeys(sorted(set(declared)), 1)
    if not configured or DEFAULT_LANE not in configured:
        sizes[DEFAULT_LANE] = concurrency
    return sizes


class FairLine:
    """Ready tasks of one lane: tenants take turns, priority then arrival order within a tenant.

    A tenant with nothing in line that submits goes before the tenants already
    taking turns (FQ-CoDel's "new flows first", with one task as the quantum):
    a tenant that sends one task at a time waits for the next free worker, not
    for one task of every busy tenant. After its one task it takes turns like
    the others, so a flood, whose line is never empty, cannot use this.
    """

    def __init__(self) -> None:
        self._by_tenant: dict[str, list[tuple[int, int, str]]] = {}
        #: tenants that had nothing in line when they submitted, in arrival order: served first
        self._new: deque[str] = deque()
        #: tenants taking turns, the next one to be served first
        self._turns: deque[str] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, tenant: str, priority: int, seq: int, task_id: str) -> None:
        heap = self._by_tenant.get(tenant)
        if heap is None:
            heap = self._by_tenant[tenant] = []
            self._new.append(tenant)
        heapq.heappush(heap, (-priority, seq, task_id))
        self._size += 1

    def pop(self, blocked: Container[str] = ()) -> str | None:
        """The next task: the first tenant in turn gives its best task and goes to the back.

        Tenants in ``blocked`` (at their share of the lane) are passed over and keep their place.
        """
        for turns in (self._new, self._turns):
            place = next((i for i, t in enumerate(turns) if t not in blocked), None) if turns else None
            if place is not None:
                break
        else:
            return None
        tenant = turns[place]
        del turns[place]
        heap = self._by_tenant[tenant]
        _, _, task_id = heapq.heappop(heap)
        self._size -= 1
        if heap:
            self._turns.append(tenant)
        else:
            del self._by_tenant[tenant]
        return task_id

    def clear(self) -> None:
        self._by_tenant.clear()
        self._new.clear()
        self._turns.clear()
        self._size = 0


@dataclass(eq=False)
class Lane:
    """One queue's share of the pool: its size, its line, and its worker processes once started."""

    name: str
    size: int
    line: FairLine = field(default_factory=FairLine)
    workers: list[WorkerProcess] = field(default_factory=list)
    #: moving averages: seconds from staging a task to its start being written, and of a task's run
    write_seconds: float = 0.0
    task_seconds: float = FIRST_RUN
    #: the run's moving average per task type (a lane's short and long tasks differ by orders)
    type_seconds: dict[str, float] = field(default_factory=dict)

    def live_workers(self) -> list[WorkerProcess]:
        return [w for w in self.workers if not w.dead]

    def wrote_start(self, seconds: float) -> None:
        self.write_seconds = 0.8 * self.write_seconds + 0.2 * seconds

    def ran(self, seconds: float, task_type: str | None = None) -> None:
        self.task_seconds = 0.8 * self.task_seconds + 0.2 * seconds
        if task_type is not None:
            before = self.type_seconds.get(task_type)
            self.type_seconds[task_type] = seconds if before is None else 0.8 * before + 0.2 * seconds

    def top_up_at(self, w: WorkerProcess, running: str | None) -> float:
        """When a busy worker is handed its next task (monotonic; 0: at once).

        Just before its running task is expected to end: early enough for the
        next one's start write to land in time, late enough that a task
        another tenant submits meanwhile is the one chosen. A task handed out
        early waits behind the running one, and a task submitted after it
        waits behind both: under a flood of 20 ms tasks, that was another
        tenant's ping waiting ~35 ms instead of ~20. ``running``: the type of
        the worker's first task (running, or having its start written), whose
        own moving average says when it ends.
        """
        lead = 2 * self.write_seconds + TOP_UP_SLACK
        # A type not seen yet is taken as long: its first task alone may wait for one write.
        expected = self.type_seconds.get(running, FIRST_RUN) if running is not None else FIRST_RUN
        if expected <= lead:
            return 0.0  # shorter than its successor's start write: no time to lose
        if w.running_since is None:
            return math.inf  # its next task is being written; decided again once that one starts
        return w.running_since + expected - lead

    def held_per_worker(self, prefetch: int) -> int:
        """How many tasks each worker holds: ``prefetch``, or enough to cover one start write.

        A task may be sent only once its start is written, so a worker whose
        tasks are shorter than that write would wait for it between tasks;
        it holds as many as run while one write lands. Long tasks keep
        ``prefetch``, and another tenant waits about one write, not a flood.
        ``prefetch`` 1 asks for one task at a time, and gets it.
        """
        if prefetch == 1:
            return 1
        cover = math.ceil(self.write_seconds / max(self.task_seconds, 1e-4)) + 1
        return max(prefetch, min(MAX_HELD, cover))
