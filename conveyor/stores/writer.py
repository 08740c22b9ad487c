"""BufferedWriter: state changes and progress written in batches.

A task that reports progress fifty times a second must not cost fifty
transactions, and a pool finishing thousands of tasks a second must not cost
thousands. Changes are merged per task (the newest progress wins, every state
change is kept on the timeline) and written every ``interval`` seconds in one
transaction. When the store is down the batch is kept and tried again, so no
state change is lost while the process lives; a crash loses at most one
interval, and the task is then run again (at-least-once).

A change may carry a callback, told after the write whether the change
applied (False: the task had finished meanwhile). The local pool hands a
task to a worker process only once its start is written that way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeAlias

from conveyor.records import FINAL_STATES
from conveyor.stores.base import Change, Store

__all__ = ["BufferedWriter", "OnApplied"]

log = logging.getLogger("conveyor.writer")

#: told whether a change applied, after the write
OnApplied: TypeAlias = Callable[[bool], None]


class BufferedWriter:
    def __init__(
        self,
        store: Store,
        *,
        interval: float = 0.02,
        on_flushed: Callable[[Sequence[Change]], None] | None = None,
        max_batch: int = 5000,
        watched: Callable[[str], bool] | None = None,
    ) -> None:
        self.store = store
        #: is anyone in this process waiting on the task? (None: assume so, always)
        self.watched = watched
        self.interval = interval
        self.on_flushed = on_flushed
        self.max_batch = max_batch
        self._pending: dict[str, Change] = {}
        #: the buffered changes that end their task (what a waiter may be hurried for)
        self._finals: set[str] = set()
        self._callbacks: dict[str, list[OnApplied]] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: the last error met while writing (None when healthy)
        self.last_error: Exception | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="conveyor-writer", daemon=True)
            self._thread.start()

    def put(self, change: Change, *, urgent: bool = False, on_applied: OnApplied | None = None) -> None:
        """Buffer ``change``; a final state someone waits on is written at once, not at the next interval.

        A client may be waiting for that outcome (``wait()``, ``.get()``, an
        SSE stream), and whatever else is buffered goes in the same
        transaction. An outcome nobody in this process watches (a Celery
        worker's, a task nobody follows) waits for the interval instead: one
        write a task costs a busy pool a quarter of its rate. A watcher who
        comes later hurries it (``hurry``).
        """
        final = change.fields.get("state") in FINAL_STATES
        if not urgent and final:
            urgent = self.watched is None or self.watched(change.task_id)
        with self._lock:
            if final:
                self._finals.add(change.task_id)
            if on_applied is not None:
                self._callbacks.setdefault(change.task_id, []).append(on_applied)
            existing = self._pending.get(change.task_id)
            if existing is None:
                self._pending[change.task_id] = change
            else:
                existing.merge(change)
            big = len(self._pending) >= self.max_batch
        if urgent or big:
            self._wake.set()

    def hurry(self, task_ids: Iterable[str] | None) -> None:
        """Someone now waits on ``task_ids`` (on every task when None): write their buffered outcomes now.

        Only final states: a stream re-waits after every flush, and hurrying
        progress too would end the coalescing of progress whenever one is open.
        """
        with self._lock:
            due = bool(self._finals) if task_ids is None else any(t in self._finals for t in task_ids)
        if due:
            self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def flush(self) -> None:
        """Write everything buffered now; raises the store's error if it fails."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
                self._finals.clear()
                callbacks, self._callbacks = self._callbacks, {}
            if not batch:
                return
            changes = list(batch.values())
            try:
                applied = self.store.apply(changes)
            except Exception:
                with self._lock:
                    # Put the batch back under anything newer that came meanwhile.
                    for change in changes:
                        newer = self._pending.get(change.task_id)
                        if newer is not None:
                            change.merge(newer)
                        self._pending[change.task_id] = change
                        if change.fields.get("state") in FINAL_STATES:
                            self._finals.add(change.task_id)
                    for task_id, fns in callbacks.items():
                        fns.extend(self._callbacks.get(task_id, ()))
                        self._callbacks[task_id] = fns
                raise
            for task_id, fns in callbacks.items():
                for fn in fns:
                    try:
                        fn(task_id in applied)
                    except Exception:  # a listener's bug must not stop the writer
                        log.exception("write callback failed")
        self.last_error = None
        if self.on_flushed is not None:
            try:
                self.on_flushed(changes)
            except Exception:  # a listener's bug must not stop the writer
                log.exception("flush listener failed")

    def _run(self) -> None:
        backoff = self.interval
        while True:
            self._wake.wait(backoff)
            self._wake.clear()
            stopping = self._stopping
            try:
                self.flush()
                backoff = self.interval
            except Exception as e:
                self.last_error = e
                backoff = min(2.0, max(backoff * 2, 0.05))
                log.warning("store write failed, retrying in %.2fs: %s", backoff, _first_lines(e))
            if stopping and not self._pending:
                return
            if stopping and self.last_error is not None:
                return

    def stop(self, timeout: float = 10.0) -> None:
        """Flush what is left and stop the thread."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            try:
                self.flush()
            except Exception as e:
                log.warning("could not write %d buffered changes: %s", len(self._pending), e)
                time.sleep(0.2)


def _first_lines(e: BaseException) -> str:
    """The error and the driver's own words under it (a tenant's 503 has only the first; this log has both)."""
    parts = [e, e.__cause__] if e.__cause__ is not None else [e]
    lines = [(str(p).strip().splitlines() or [type(p).__name__])[0][:300] for p in parts]
    return " <- ".join(lines)
