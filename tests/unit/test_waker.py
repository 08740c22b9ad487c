"""The pool loop's waker: a poke after the loop last woke always wakes it again."""

from __future__ import annotations

import select
import sys
import threading
from collections.abc import Iterator

import pytest

from conveyor.executors.local.waker import Waker


@pytest.fixture
def waker() -> Iterator[Waker]:
    w = Waker()
    yield w
    w.close()


def readable(w: Waker, within: float = 0.0) -> bool:
    return bool(select.select([w.socket], [], [], within)[0])


def test_a_poke_wakes_the_loop_once_however_many_come_before_it_wakes(waker: Waker) -> None:
    assert not readable(waker)
    for _ in range(1000):
        waker.poke()
    assert readable(waker)
    waker.consume()
    assert not readable(waker)
    waker.poke()
    assert readable(waker)


def test_pokes_racing_the_loops_consume_never_leave_it_asleep(waker: Waker) -> None:
    """Other threads poke while the loop consumes; whenever the loop is about to wait, a poke wakes it.

    The loop that cleared its flag before draining the socket lost a poke
    landing in between, and every poke after it: the pool then moved only on
    its 0.25 s timeout (0.15x the throughput).
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads change hands between nearly every bytecode
    stop = threading.Event()

    def poker() -> None:
        while not stop.is_set():
            waker.poke()

    threads = [threading.Thread(target=poker) for _ in range(2)]
    for t in threads:
        t.start()
    lost = 0
    try:
        for _ in range(20_000):
            waker.consume()
            # The loop is about to wait: one more poke (what a writer's confirmation does) must wake it.
            # Waited for as the loop waits: a poker preempted between setting the flag and sending
            # its byte delivers it a moment later; a lost poke never does.
            waker.poke()
            if not readable(waker, within=0.2):
                lost += 1
                break  # one is enough
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(previous)
    assert lost == 0
