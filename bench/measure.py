"""What several benchmarks measure the same way."""

from __future__ import annotations

import contextlib
import threading

import psutil

__all__ = ["PeakRss"]


class PeakRss:
    """Peak RSS of a process's children (the local worker processes), sampled in a thread.

    ``pid`` is the parent (a ``conveyor serve`` subprocess); without it, this
    process, whose local pool's workers are its children.
    """

    def __init__(self, pid: int | None = None) -> None:
        self.parent = psutil.Process(pid)
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def now(self) -> int:
        """The largest RSS among the workers at this moment."""
        largest = 0
        for child in self.parent.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a worker may be replaced between the two calls
                largest = max(largest, child.memory_info().rss)
        return largest

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.now())
