"""Lease upkeep, shared by the local pool and the Celery worker processes.

Every task an executor runs carries its holder's worker id and a lease in
the store. A live holder renews all its leases in one statement every third
of the lease; a holder that died stops renewing, and whoever recovers work
(the next local pool, the Celery reaper) sees the lease lapse.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from conveyor.records import now
from conveyor.stores.base import Store

__all__ = ["LeaseKeeper", "renew_interval"]

log = logging.getLogger("conveyor.executors.leases")


def renew_interval(lease_seconds: float) -> float:
    """Seconds between renewals: a third of the lease, so two rounds may fail before it lapses."""
    return max(0.5, lease_seconds / 3)


class LeaseKeeper:
    """A daemon thread that renews ``worker_id``'s leases, with optional extra upkeep each round.

    ``store`` is a callable when the store object may be replaced (a Celery
    prefork child starts its own after fork). ``first`` runs once before the
    first renewal, ``each_round`` after every renewal; an error in either is
    logged and the next round goes on, since the lease has slack.
    """

    def __init__(
        self,
        store: Store | Callable[[], Store],
        worker_id: str,
        lease_seconds: float,
        *,
        first: Callable[[], None] | None = None,
        each_round: Callable[[], None] | None = None,
        failure: str = "lease renewal failed",
    ) -> None:
        self._store = store
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self._first = first
        self._each_round = each_round
        self._failure = failure
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    @property
    def store(self) -> Store:
        return self._store() if callable(self._store) else self._store

    def start(self) -> None:
        """Start the thread; ``ensure`` is the same and restarts one that died."""
        self.ensure()

    def ensure(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="conveyor-lease", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def renew(self) -> None:
        """Extend every lease by ``lease_seconds``, counted from when the renewal returned.

        The time written is taken before the call; one that blocked (a hung
        database, up to its deadline) wrote a lease with less time left than
        a round's worth, perhaps already past. Then it is renewed again at
        once, from the new time, until a renewal returns in time.
        """
        while True:
            started = now()
            self.store.renew_leases(self.worker_id, started + self.lease_seconds)
            if now() - started < renew_interval(self.lease_seconds) or self._stop.is_set():
                return
            log.warning("lease renewal took %.1fs; renewing again", now() - started)

    def _run(self) -> None:
        if self._first is not None:
            try:
                self._first()
            except Exception as e:
                log.warning("could not recover unfinished tasks yet: %s", e)
        while not self._stop.wait(renew_interval(self.lease_seconds)):
            try:
                self.renew()
                if self._each_round is not None:
                    self._each_round()
            except Exception as e:  # the next round tries again; the lease has slack
                log.warning("%s: %s", self._failure, e)
