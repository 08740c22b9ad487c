"""A store that stalls (a database hung for a while): the lease upkeep, recovery and /health stay correct.

The store here is the memory store made slow or unwritable on purpose; the
same faults on a real PostgreSQL and Redis are in tests/faults/test_hung_dependencies.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from conveyor import Conveyor, Settings, Status, TaskRecord
from conveyor.errors import StoreError
from conveyor.executors.leases import LeaseKeeper
from conveyor.executors.local import LocalExecutor
from conveyor.records import now
from conveyor.stores.base import Change
from conveyor.stores.memory import MemoryStore
from tests.counted_workload import executions


def _is_outcome(change: Change) -> bool:
    state = change.fields.get("state")
    return state is not None and Status(state).finished


class StallingStore(MemoryStore):
    """A memory store whose renewals can take long, whose writes can fail, and whose ping can hang."""

    def __init__(self) -> None:
        super().__init__()
        self.renewal_delays: list[float] = []
        self.unwritable = False
        #: only writes that end a task fail: a task's start (staged before it is sent) still lands
        self.outcomes_unwritable = False
        self.ping_delay = 0.0

    def renew_leases(self, worker: str, until: float) -> int:
        if self.renewal_delays:
            time.sleep(self.renewal_delays.pop(0))
        return super().renew_leases(worker, until)

    def apply(self, changes: Sequence[Change]) -> set[str]:
        if self.unwritable or (self.outcomes_unwritable and any(_is_outcome(c) for c in changes)):
            raise StoreError("database unavailable: stalled")
        return super().apply(changes)

    def ping(self) -> None:
        time.sleep(self.ping_delay)


@pytest.fixture
def stalling(tmp_path: Path) -> Iterator[tuple[Conveyor, StallingStore]]:
    store = StallingStore()
    settings = Settings(data_dir=tmp_path, concurrency=1, lease_seconds=5, workloads="system", health_timeout=1.0)
    app = Conveyor(settings, store=store).start()
    yield app, store
    app.stop(graceful=False)


def test_a_renewal_that_returned_late_is_renewed_again_from_when_it_returned() -> None:
    store = StallingStore()
    r = TaskRecord(id=str(uuid.uuid4()), type="t.x", tenant="a", state=Status.PROCESSING, worker="w")
    store.insert([r])
    store.renewal_delays = [1.5]  # the first call blocks for half the lease
    LeaseKeeper(store, "w", lease_seconds=3).renew()
    got = store.get(r.id)
    assert got is not None
    assert got.lease_expires_at is not None
    assert got.lease_expires_at >= now() + 3 - 0.5  # a whole lease left, not what was left of the first


def test_recovery_never_adopts_a_task_its_own_live_pool_finished_but_could_not_write_yet(
    stalling: tuple[Conveyor, StallingStore], tmp_path: Path
) -> None:
    """The hang of finding 5: a lease lapsed while the outcome waited in the writer; no second run."""
    app, store = stalling
    executor = app.executor
    assert isinstance(executor, LocalExecutor)
    log = tmp_path / "executions.log"
    store.outcomes_unwritable = True
    task_id = app.manager.submit("tests.counted", log=str(log))
    deadline = time.monotonic() + 20
    while executor.processed < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    store.renew_leases(executor.worker_id, now() - 1)  # a renewal that committed after its own deadline
    assert executor.recover() == 0
    store.outcomes_unwritable = False
    while (record := store.get(task_id)) is None or record.state is not Status.SUCCESS:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # a wrongly adopted copy would have run by now
    assert executions(log) == {task_id: 1}


def test_health_answers_within_its_deadline_while_the_store_hangs(stalling: tuple[Conveyor, StallingStore]) -> None:
    app, store = stalling
    store.ping_delay = 10
    started = time.monotonic()
    report = app.health()
    assert time.monotonic() - started < 2.0
    assert report["database"]["status"] == "down"
    assert report["overall_status"] == "unhealthy"
