"""The worker process of the local pool: forked by the pool, runs one task at a time.

A worker never touches the task store: it receives ``Run`` messages on its
task pipe, answers ``Progress`` and ``Done`` there, and reads ``Cancel`` on its
control pipe. Its parent is the only writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.context import TaskContext
from conveyor.executors.base import failure_outcome, run_task
from conveyor.executors.local.messages import Cancel, Done, FromWorker, Progress, Run, Stop
from conveyor.records import now
from conveyor.registry import Registry

if TYPE_CHECKING:
    from multiprocessing.context import ForkContext
    from multiprocessing.process import BaseProcess

    from conveyor.resources import Resources

__all__ = ["fork_worker"]


class _ChildSink:
    """Progress and cancel flags inside a worker process.

    Progress is rate-limited: at most one message per ``min_gap`` seconds per
    task; the latest throttled report is sent by the control thread shortly
    after, so a task that reports 40 % and then computes for a minute still
    shows 40 %.
    """

    def __init__(self, conn: multiprocessing.connection.Connection, send_lock: threading.Lock) -> None:
        self.conn = conn
        self.send_lock = send_lock
        self.cancelled: set[str] = set()
        self.min_gap = 0.01
        self._last_sent = 0.0
        self._held: Progress | None = None
        self._lock = threading.Lock()

    def report(self, task_id: str, progress: float, message: str, meta: dict[str, Any]) -> None:
        msg = Progress(task_id, progress, message, meta, now())
        with self._lock:
            t = time.monotonic()
            if t - self._last_sent < self.min_gap:
                self._held = msg
                return
            self._last_sent = t
            self._held = None
        self._send(msg)

    def flush_held(self) -> None:
        with self._lock:
            msg, self._held = self._held, None
            if msg is not None:
                self._last_sent = time.monotonic()
        if msg is not None:
            self._send(msg)

    def drop_held(self) -> None:
        with self._lock:
            self._held = None

    def is_cancelled(self, task_id: str) -> bool:
        return task_id in self.cancelled

    def _send(self, msg: FromWorker) -> None:
        with self.send_lock:
            self.conn.send(msg)


def _set_parent_death_signal() -> None:
    """Ask Linux to kill this worker if its parent dies (SIGKILL of `conveyor serve`)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _close_inherited_sockets(keep: set[int]) -> None:
    """Close every socket a fork copied from the parent, but our own two pipes.

    Without this a worker holds the server's listening socket (a restarted
    server finds its port taken), its database and broker connections, and
    the parent's ends of its siblings' pipes (so the parent's death would not
    show as end-of-file). Files are left alone: log handlers write to them.
    """
    import stat

    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        if fd < 3 or fd in keep:
            continue
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except OSError:
            pass


#: the descriptors a worker being forked keeps (its two pipe ends); None when no worker is being forked
_FORKING_KEEP: frozenset[int] | None = None
_SPAWN_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    """Runs in every child right after fork(), before multiprocessing's after-fork handlers.

    Those handlers are the hazard: kombu registers one that closes its broker
    connections in the child, and closing a Redis channel reads from the
    socket shared with the parent, which blocks the new worker forever (or
    steals the parent's reply). Closing our copies of every socket first
    makes such a handler fail at once instead; multiprocessing ignores its error.
    """
    if _FORKING_KEEP is not None:
        _close_inherited_sockets(keep=set(_FORKING_KEEP))


os.register_at_fork(after_in_child=_after_fork_in_child)


def fork_worker(
    mp: ForkContext,
    index: int,
    registry: Registry,
    workdir_root: Path,
    on_start: Callable[[], Resources | None] | None,
) -> tuple[BaseProcess, multiprocessing.connection.Connection, multiprocessing.connection.Connection]:
    """Fork worker ``index``; returns its process and the parent's ends of its task and control pipes."""
    parent_conn, child_conn = mp.Pipe(duplex=True)
    # Both pipes are socket pairs, so the sweep in the child closes the parent ends.
    control_r, control_w = mp.Pipe(duplex=True)
    process = mp.Process(
        target=_child_main,
        args=(child_conn, control_r, registry, workdir_root, os.getpid(), on_start),
        name=f"conveyor-worker-{index}",
        daemon=True,
    )
    global _FORKING_KEEP
    with _SPAWN_LOCK:
        _FORKING_KEEP = frozenset({child_conn.fileno(), control_r.fileno()})
        try:
            process.start()
        finally:
            _FORKING_KEEP = None
    child_conn.close()
    control_r.close()
    return process, parent_conn, control_w


def _child_main(
    conn: multiprocessing.connection.Connection,
    control: multiprocessing.connection.Connection,
    registry: Registry,
    workdir_root: Path,
    parent_pid: int,
    on_start: Callable[[], Resources | None] | None,
) -> None:
    _set_parent_death_signal()
    _close_inherited_sockets(keep={conn.fileno(), control.fileno()})
    # Ctrl-C reaches the whole process group; the parent decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if os.getppid() != parent_pid:
        os._exit(1)
    resources = on_start() if on_start is not None else None
    send_lock = threading.Lock()
    sink = _ChildSink(conn, send_lock)

    def watch_control() -> None:
        while True:
            try:
                if control.poll(0.05):
                    msg = control.recv()
                    if isinstance(msg, Cancel):
                        sink.cancelled.add(msg.task_id)
                sink.flush_held()
            except (EOFError, OSError):
                # The parent is gone: nobody will record what we do.
                os._exit(0)

    threading.Thread(target=watch_control, name="conveyor-control", daemon=True).start()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    while True:
        try:
            msg: Run | Stop = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        if isinstance(msg, Stop):
            break
        task_id = msg.task_id
        if msg.cancel_requested:
            sink.cancelled.add(task_id)
        try:
            task_type = registry.get(msg.type_name)
        except Exception as e:
            outcome = failure_outcome(f"task type {msg.type_name!r} is not registered in this worker: {e}")
        else:
            ctx = TaskContext(
                task_id=task_id,
                task_type=msg.type_name,
                tenant=msg.tenant,
                attempt=msg.attempt,
                queue=msg.queue,
                sink=sink,
                workdir_root=workdir_root,
                resources=resources,
            )
            outcome = run_task(task_type, ctx, msg.params, max_retries=msg.max_retries, loop=loop)
        sink.drop_held()
        sink.cancelled.discard(task_id)
        try:
            with send_lock:
                conn.send(Done(task_id, outcome.state.value, outcome.result, outcome.error, outcome.retry_in, now()))
        except (EOFError, OSError):
            os._exit(0)
        except Exception as e:  # a result pickle could not carry
            with send_lock:
                conn.send(
                    Done(task_id, "FAILURE", None, failure_outcome(f"could not send result: {e}").error, None, now())
                )
    loop.close()
    os._exit(0)
