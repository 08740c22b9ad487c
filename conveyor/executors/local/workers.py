"""The pool's handle on one worker process, and the ids under which a pool holds its tasks."""

from __future__ import annotations

import contextlib
import multiprocessing.connection
import os
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.executors.local.child import fork_worker
from conveyor.executors.local.messages import Cancel, Run, Stop

if TYPE_CHECKING:
    from multiprocessing.context import ForkContext
    from multiprocessing.process import BaseProcess

    from conveyor.registry import Registry
    from conveyor.resources import Resources

__all__ = ["HOST", "LIVE_HERE", "WorkerProcess", "holder_dead", "local_worker_id"]

HOST = socket.gethostname()

#: pools running in this process; an id of ours that is not here has stopped
LIVE_HERE: set[str] = set()


def local_worker_id() -> str:
    return f"local:{HOST}:{os.getpid()}:{os.urandom(3).hex()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_dead(worker: str) -> bool:
    """A ``local:host:pid:token`` holder on this host whose process is gone (or is us, reborn)."""
    try:
        _, host, pid_text, _token = worker.split(":")
        pid = int(pid_text)
    except ValueError:
        return False
    if host != HOST:
        return False
    if pid == os.getpid():
        return worker not in LIVE_HERE  # an earlier pool of this same process, now stopped
    return not _pid_alive(pid)


@dataclass(eq=False)
class WorkerProcess:
    """One forked worker, as the pool sees it: its pipes and the tasks sent to it."""

    #: unique in its pool (the process's name); ``slot`` is its place in its lane
    index: int
    process: BaseProcess
    conn: multiprocessing.connection.Connection
    control: multiprocessing.connection.Connection
    #: tasks sent to it, in the order it runs them; the first one is running
    queue: deque[str] = field(default_factory=deque)
    #: when the first task of ``queue`` started (monotonic), None when idle
    running_since: float | None = None
    #: hard deadline (monotonic) of the running task
    deadline: float | None = None
    dead: bool = False
    #: the lane (queue) it serves, and its place there
    lane: str = "default"
    slot: int = 0
    #: tasks chosen for it whose start is being written; sent once it is
    staged: list[str] = field(default_factory=list)

    @classmethod
    def spawn(
        cls,
        mp: ForkContext,
        index: int,
        registry: Registry,
        data_dir: Path,
        on_start: Callable[[], Resources | None] | None,
        *,
        lane: str = "default",
        slot: int = 0,
    ) -> WorkerProcess:
        process, conn, control = fork_worker(mp, index, registry, data_dir, on_start)
        return cls(index, process, conn, control, lane=lane, slot=slot)

    @property
    def alive(self) -> bool:
        return not self.dead and self.process.is_alive()

    @property
    def load(self) -> int:
        """Tasks it has or will have: sent to it, and staged for it."""
        return len(self.queue) + len(self.staged)

    def send_run(self, msg: Run) -> bool:
        """Queue a task on this worker; True when it is the first, so it starts now."""
        self.conn.send(msg)
        self.queue.append(msg.task_id)
        return len(self.queue) == 1

    def done(self, task_id: str) -> None:
        """The running task ended: the next one in the queue, if any, starts."""
        if self.queue and self.queue[0] == task_id:
            self.queue.popleft()
        self.running_since = None
        self.deadline = None

    def cancel(self, task_id: str) -> None:
        with contextlib.suppress(OSError):
            self.control.send(Cancel(task_id))

    def lost(self) -> list[str]:
        """Kill the process (it died, passed a limit, or was terminated); returns the tasks it had."""
        self.dead = True
        queue = list(self.queue)
        self.queue.clear()
        self.running_since = None
        self.deadline = None
        with contextlib.suppress(Exception):
            self.process.kill()
        self.process.join(1)
        with contextlib.suppress(Exception):
            self.conn.close()
            self.control.close()
        return queue

    def ask_to_stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(Stop())

    def close(self, *, graceful: bool) -> None:
        """After ``ask_to_stop``: wait for the process a moment (not at all if not graceful), then kill it."""
        self.process.join(0.5 if graceful else 0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1)
        self.conn.close()
        self.control.close()

    def info(self, pool_id: str) -> dict[str, Any]:
        return {
            "name": f"{pool_id}/{self.index}",
            "pid": self.process.pid,
            "alive": self.alive,
            "queue": self.lane,
            "active": [self.queue[0]] if self.queue and self.running_since is not None else [],
            "reserved": list(self.queue)[1:],
        }
