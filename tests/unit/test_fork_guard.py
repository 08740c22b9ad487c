"""A fork waits for a SQLite write or checkpoint in flight, so no child inherits SQLite's mutexes locked."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from conveyor import Settings
from conveyor.stores import fork_guard, open_store
from conveyor.stores.fork_guard import Guard


def _fork_and_time() -> float:
    """Fork a child that leaves at once; seconds until the fork returned in the parent."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    took = time.monotonic() - started
    os.waitpid(pid, 0)
    return took


@pytest.mark.parametrize("lock", ["_write_lock", "_checkpoint_lock"])
def test_a_fork_waits_until_the_stores_write_or_checkpoint_is_done(tmp_path: Path, lock: str) -> None:
    store = open_store(Settings(database_url=f"sqlite:///{tmp_path / 'c.db'}").resolved_database_url)
    store.open()
    try:
        guard: Guard = getattr(store, lock)
        held = threading.Event()

        def in_flight() -> None:
            with guard:
                held.set()
                time.sleep(0.3)

        holder = threading.Thread(target=in_flight)
        holder.start()
        held.wait(5)
        took = _fork_and_time()
        holder.join()
        assert took >= 0.2, f"the fork went ahead after {took:.3f}s while the {lock} was held"
        assert not guard.locked()  # given back in the parent after the fork
        assert _fork_and_time() < 0.2  # and nothing is held once the write is done
    finally:
        store.close()


def test_a_fork_made_while_its_own_thread_holds_a_guard_goes_on_after_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fork_guard, "FORK_WAIT", 0.1)
    guard = Guard(rank=0)
    with guard:
        assert _fork_and_time() < 2.0
    assert not guard.locked()
