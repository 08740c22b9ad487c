"""Lanes of the local pool: worker processes of their own per queue, and a fair line in each.

A lane is a set of worker processes that only run tasks of its queues, so a
long task on one queue never holds up another queue: a 30 s ``system.sleep``
on ``default`` leaves an upload's lane free for it. Within a
lane the line is fair across tenants: the tenants with ready tasks take turns
(round robin), and each tenant's own tasks go by priority, then by arrival.
A tenant that floods the lane with 200 tasks makes another tenant's task wait
for the tasks already handed to the lane's workers, not for the 200.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from conveyor.executors.local.workers import WorkerProcess

__all__ = ["DEFAULT_LANE", "FairLine", "Lane", "lane_sizes"]

#: the lane of the ``default`` queue, and of every queue that has no lane of its own
DEFAULT_LANE = "default"
#: the most tasks one worker holds (staged or sent), however short its tasks are
MAX_HELD = 32


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
    """Ready tasks of one lane: tenants take turns, priority then arrival order within a tenant."""

    def __init__(self) -> None:
        self._by_tenant: dict[str, list[tuple[int, int, str]]] = {}
        #: tenants with ready tasks, the next one to be served first
        self._turns: deque[str] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, tenant: str, priority: int, seq: int, task_id: str) -> None:
        heap = self._by_tenant.get(tenant)
        if heap is None:
            heap = self._by_tenant[tenant] = []
            self._turns.append(tenant)
        heapq.heappush(heap, (-priority, seq, task_id))
        self._size += 1

    def pop(self) -> str | None:
        """The next task: the first tenant in turn gives its best task and goes to the back."""
        if not self._turns:
            return None
        tenant = self._turns.popleft()
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
    task_seconds: float = 1.0

    def live_workers(self) -> list[WorkerProcess]:
        return [w for w in self.workers if not w.dead]

    def wrote_start(self, seconds: float) -> None:
        self.write_seconds = 0.8 * self.write_seconds + 0.2 * seconds

    def ran(self, seconds: float) -> None:
        self.task_seconds = 0.8 * self.task_seconds + 0.2 * seconds

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
