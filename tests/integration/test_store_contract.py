"""One contract, every store: the same tests run on memory, SQLite, PostgreSQL and Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Settings, Status, TaskQuery, TaskRecord
from conveyor.records import TaskEvent, now
from conveyor.stores import open_store
from conveyor.stores.base import Change, DuplicateTask, Store


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "redis":
        from conveyor.stores.redis import RedisStore
        from tests.conftest import REDIS_URL, require_redis

        require_redis()
        redis_store = RedisStore(f"{REDIS_URL}/15", prefix=f"conveyor-test-{uuid.uuid4().hex[:8]}:")
        redis_store.open()
        yield redis_store
        redis_store.flush()
        redis_store.close()
        return
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'c.db'}"
    else:
        url = request.getfixturevalue("clean_postgres_url")
    s = open_store(Settings(database_url=url).resolved_database_url)
    s.open()
    yield s
    s.close()


def rec(**kw: object) -> TaskRecord:
    import uuid

    base: dict[str, object] = {"id": str(uuid.uuid4()), "type": "t.x", "tenant": "a"}
    base.update(kw)
    return TaskRecord(**base)  # type: ignore[arg-type]


def test_a_record_reads_back_as_written(store: Store) -> None:
    r = rec(params={"n": 1, "s": "héllo"}, priority=3, meta={"k": [1, 2]})
    store.insert([r])
    got = store.get(r.id)
    assert got == r


def test_an_unknown_id_is_none(store: Store) -> None:
    assert store.get("no-such-id") is None


@pytest.mark.parametrize("result", [None, "a plain string", 42, 2.5, True, [1, "x"], {"k": {"v": None}}])
def test_a_read_from_an_event_loop_is_the_same_record(store: Store, result: object) -> None:
    """``aget`` (status polls over HTTP) answers what ``get`` does, on PostgreSQL through its own
    asyncio connections: JSON values of every kind, a finished record's fields, an unknown id."""
    import asyncio

    r = rec(params={"s": "héllo"}, meta={"progress_detail": [1, 2]})
    store.insert([r])
    store.apply(
        [Change(r.id, {"state": Status.SUCCESS.value, "result": result, "progress": 100.0, "finished_at": 5.0})]
    )

    async def read() -> tuple[TaskRecord | None, TaskRecord | None, TaskRecord | None]:
        first = await store.aget(r.id)
        again = await store.aget(r.id)  # on the connection the first read left idle
        return first, again, await store.aget("no-such-id")

    first, again, unknown = asyncio.run(read())
    assert first == store.get(r.id)
    assert again == first
    assert first is not None
    assert first.result == result
    assert unknown is None


def test_a_timeline_read_from_an_event_loop_is_the_same_timeline(store: Store) -> None:
    """``aevents`` (live streams, on every change) answers what ``events`` does, after any step."""
    import asyncio

    r = rec()
    store.insert([r])
    store.apply(
        [
            Change(r.id, {"progress": 50.0}, [TaskEvent(r.id, 1.0, Status.PROCESSING, 50.0, "half", kind="progress")]),
            Change(r.id, {"state": Status.SUCCESS}, [TaskEvent(r.id, 2.0, Status.SUCCESS, 100.0, "done")]),
        ]
    )
    every = store.events(r.id)
    assert [e.message for e in every] == ["half", "done"]

    async def read() -> tuple[list[TaskEvent], list[TaskEvent], list[TaskEvent]]:
        return await store.aevents(r.id), await store.aevents(r.id, every[0].seq), await store.aevents("no-such-id")

    assert asyncio.run(read()) == (every, every[1:], [])


def test_get_many_returns_the_known_ids_and_skips_the_rest(store: Store) -> None:
    """Every field read back as written, in any order; unknown ids are simply absent."""
    a, b = rec(params={"i": 1}), rec(params={"i": 2}, state=Status.SUCCESS, result={"ok": True})
    store.insert([a, b])
    got = {r.id: r for r in store.get_many([b.id, "no-such-id", a.id])}
    assert got == {a.id: a, b.id: b}
    assert store.get_many([]) == []


def test_a_requeue_is_one_write_with_its_timeline_event(store: Store) -> None:
    """``reset`` with an event (transitions.requeue) moves the task and records the step, or does neither."""
    from conveyor.transitions import requeue

    r = rec(state=Status.PROCESSING, worker="w1", lease_expires_at=now() + 30)
    store.insert([r])
    move = requeue(r, "Worker lost; queued again", at=now(), worker=None, lease_expires_at=None)
    moved = store.reset(move.task_id, move.fields, move.from_states, move.event)
    assert moved is not None
    assert (moved.state, moved.worker, moved.message) == (Status.PENDING, None, "Worker lost; queued again")
    assert [(e.state, e.message) for e in store.events(r.id)] == [(Status.PENDING, "Worker lost; queued again")]
    # A second reaper finds it no longer PROCESSING: nothing changes, no second event.
    assert store.reset(move.task_id, move.fields, move.from_states, move.event) is None
    assert len(store.events(r.id)) == 1


def test_a_reachable_store_answers_a_ping(store: Store) -> None:
    store.ping()  # raises StoreError when the store cannot be reached (the outage tests kill it)


def test_an_idempotency_key_is_unique_per_tenant(store: Store) -> None:
    store.insert([rec(idempotency_key="k1")])
    store.insert([rec(idempotency_key="k1", tenant="b")])
    with pytest.raises(DuplicateTask):
        store.insert([rec(idempotency_key="k1")])
    found = store.find_by_idempotency_key("a", "k1")
    assert found is not None
    assert found.tenant == "a"


def test_an_idempotency_key_is_free_again_once_its_task_has_expired(store: Store) -> None:
    """The key goes with its record: kept for ever, it would name an id that is gone and refuse every new task."""
    first = rec(idempotency_key="k1")
    store.insert([first])
    at = now()
    store.apply([Change(first.id, {"state": Status.SUCCESS, "finished_at": at, "expires_at": at + 1})])
    deadline = at + 30
    while store.get(first.id) is not None:  # Redis expires the record by itself; SQL and memory when purged
        store.purge_expired(now())
        assert now() < deadline, "the record did not expire"
        time.sleep(0.1)
    again = rec(idempotency_key="k1")
    store.insert([again])
    found = store.find_by_idempotency_key("a", "k1")
    assert found is not None
    assert found.id == again.id


def test_an_idempotency_key_kept_by_a_task_that_runs_again_does_not_expire(store: Store) -> None:
    """A finished task retried (its expiry cleared) keeps its key: a second submit still finds it."""
    first = rec(idempotency_key="k2")
    store.insert([first])
    at = now()
    store.apply([Change(first.id, {"state": Status.FAILURE, "finished_at": at, "expires_at": at + 1})])
    moved = store.reset(first.id, {"state": Status.PENDING, "finished_at": None, "expires_at": None}, (Status.FAILURE,))
    assert moved is not None
    time.sleep(1.6)
    store.purge_expired(now())
    found = store.find_by_idempotency_key("a", "k2")
    assert found is not None
    assert found.id == first.id
    with pytest.raises(DuplicateTask):
        store.insert([rec(idempotency_key="k2")])


def test_idempotency_keys_of_tenants_whose_names_hold_a_colon_never_collide(store: Store) -> None:
    """Tenant "a:b" with key "c" and tenant "a" with key "b:c" are two keys, not one."""
    first = rec(tenant="a:b", idempotency_key="c")
    second = rec(tenant="a", idempotency_key="b:c")
    third = rec(tenant="a%3Ab", idempotency_key="c")
    store.insert([first])
    store.insert([second])
    store.insert([third])
    for r in (first, second, third):
        found = store.find_by_idempotency_key(r.tenant, r.idempotency_key or "")
        assert found is not None
        assert found.id == r.id


def test_a_filtered_list_follows_state_changes(store: Store) -> None:
    t0 = now()
    records = [rec(created_at=t0 + i, queue="q1" if i < 3 else "q2") for i in range(5)]
    records.append(rec(tenant="a:b", created_at=t0 + 10))
    store.insert(records)
    t = now()
    store.apply([Change(records[1].id, {"state": Status.SUCCESS, "finished_at": t}, [])])
    store.apply([Change(records[4].id, {"state": Status.PROCESSING}, [])])
    done = store.query(TaskQuery(tenant="a", states=[Status.SUCCESS]))
    assert [r.id for r in done.items] == [records[1].id]
    assert done.total == 1
    waiting = store.query(TaskQuery(tenant="a", states=[Status.PENDING, Status.PROCESSING], queues=["q2"]))
    assert [r.id for r in waiting.items] == [records[4].id, records[3].id]
    oldest = store.query(TaskQuery(tenant="a", states=[Status.PENDING], newest_first=False, limit=1, offset=1))
    assert [r.id for r in oldest.items] == [records[2].id]
    assert oldest.total == 3
    assert store.query(TaskQuery(tenant="a:b", states=[Status.PENDING])).total == 1
    assert store.query(TaskQuery(tenant=None, states=[Status.PENDING])).total == 4
    prefixed = store.query(TaskQuery(tenant="a", queues=["q1"], id_prefix=records[2].id[:8]))
    assert [r.id for r in prefixed.items] == [records[2].id]


def test_changes_apply_to_unfinished_tasks_only(store: Store) -> None:
    """Completion is idempotent: a second outcome for a finished task changes nothing."""
    r = rec()
    store.insert([r])
    t = now()
    store.apply(
        [
            Change(
                r.id,
                {"state": Status.SUCCESS, "result": {"v": 1}, "finished_at": t, "progress": 100.0},
                [TaskEvent(r.id, t, Status.SUCCESS, 100.0, "Completed", kind="state")],
            )
        ]
    )
    store.apply([Change(r.id, {"state": Status.FAILURE, "result": None}, [])])
    got = store.get(r.id)
    assert got is not None
    assert got.state is Status.SUCCESS
    assert got.result == {"v": 1}
    assert [e.state for e in store.events(r.id)] == [Status.SUCCESS]


def test_a_change_to_a_finished_task_adds_nothing_to_its_timeline(store: Store) -> None:
    """A late outcome (a terminated task's worker, a redelivery) leaves one final step, and apply says so."""
    done, waiting = rec(), rec()
    store.insert([done, waiting])
    t = now()
    cancel = [TaskEvent(done.id, t, Status.CANCELLED, 0.0, "Terminated on request", kind="state")]
    assert store.apply([Change(done.id, {"state": Status.CANCELLED, "finished_at": t}, cancel)]) == {done.id}
    late = [TaskEvent(done.id, t + 1, Status.CANCELLED, 0.0, "Cancelled", kind="state")]
    step = [TaskEvent(waiting.id, t + 1, Status.PROCESSING, 5.0, "working")]
    applied = store.apply(
        [
            Change(done.id, {"state": Status.CANCELLED, "finished_at": t + 1}, late),
            Change(waiting.id, {"progress": 5.0}, step),
        ]
    )
    assert applied == {waiting.id}
    assert [e.message for e in store.events(done.id)] == ["Terminated on request"]
    assert [e.message for e in store.events(waiting.id)] == ["working"]


def test_events_come_back_in_order_after_a_sequence_number(store: Store) -> None:
    r = rec()
    store.insert([r])
    for i in range(3):
        store.apply(
            [Change(r.id, {"progress": float(i)}, [TaskEvent(r.id, now(), Status.PROCESSING, float(i), f"s{i}")])]
        )
    events = store.events(r.id)
    assert [e.message for e in events] == ["s0", "s1", "s2"]
    assert [e.message for e in store.events(r.id, after_seq=events[0].seq)] == ["s1", "s2"]


def test_many_tasks_changed_in_one_batch_keep_every_field_and_their_steps_in_order(store: Store) -> None:
    """One write of many changes (a busy writer's flush): each row gets its own values, each timeline its order."""
    records = [rec() for _ in range(40)]
    store.insert(records)
    at = now()
    changes = [
        Change(
            r.id,
            {"state": Status.SUCCESS, "progress": 100.0, "result": {"n": i}, "finished_at": at + i, "worker": None},
            [
                TaskEvent(r.id, at, Status.PROCESSING, 50.0, f"half {i}"),
                TaskEvent(r.id, at, Status.SUCCESS, 100.0, "done"),
            ],
        )
        for i, r in enumerate(records)
    ]
    assert store.apply(changes) == {r.id for r in records}
    for i, r in enumerate(records):
        got = store.get(r.id)
        assert got is not None
        assert (got.state, got.result, got.finished_at, got.worker) == (Status.SUCCESS, {"n": i}, at + i, None)
        assert [e.message for e in store.events(r.id)] == [f"half {i}", "done"]


def test_a_batch_mixing_ints_and_floats_and_nulls_in_one_column_is_written_as_the_columns_type(store: Store) -> None:
    """A float column given ``0`` by one task and ``0.5`` by the next; a text column given a ``Status``.

    PostgreSQL sends a batch's columns as binary arrays, whose elements must be of one type.
    """
    records = [rec(progress=0, eta=None), rec(progress=12.5, eta=1e9), rec(priority=True, eta=2_000_000_000)]
    store.insert(records)
    assert [store.get(r.id).progress for r in records] == [0.0, 12.5, 0.0]  # type: ignore[union-attr]
    assert [store.get(r.id).eta for r in records] == [None, 1e9, 2e9]  # type: ignore[union-attr]
    changes = [
        Change(records[0].id, {"progress": 50, "state": Status.PROCESSING, "lease_expires_at": None}),
        Change(records[1].id, {"progress": 99.5, "state": "PROCESSING", "lease_expires_at": 5}),
        Change(records[2].id, {"progress": 1, "state": Status.PROCESSING, "lease_expires_at": 7.25}),
    ]
    assert store.apply(changes) == {r.id for r in records}
    got = [store.get(r.id) for r in records]
    assert [(g.progress, g.state, g.lease_expires_at) for g in got] == [  # type: ignore[union-attr]
        (50.0, Status.PROCESSING, None),
        (99.5, Status.PROCESSING, 5.0),
        (1.0, Status.PROCESSING, 7.25),
    ]


def test_a_batch_with_two_changes_of_one_task_applies_them_in_order(store: Store) -> None:
    """Not merged by a writer (a direct caller): the later change wins, as if written one after the other."""
    r, other = rec(), rec()
    store.insert([r, other])
    changes = [Change(r.id, {"progress": 10.0}), Change(other.id, {"progress": 5.0}), Change(r.id, {"progress": 20.0})]
    store.apply(changes)
    got = store.get(r.id)
    assert got is not None
    assert got.progress == 20.0


def test_a_batch_of_timeline_steps_alone_adds_them_and_changes_no_field(store: Store) -> None:
    records = [rec(), rec()]
    store.insert(records)
    at = now()
    store.apply([Change(r.id, {}, [TaskEvent(r.id, at, Status.PENDING, 0.0, "noted")]) for r in records])
    for r in records:
        assert [e.message for e in store.events(r.id)][-1:] == ["noted"]
        got = store.get(r.id)
        assert got is not None
        assert got.state is Status.PENDING


def test_only_a_waiting_task_can_be_cancelled_in_one_step(store: Store) -> None:
    waiting, running = rec(), rec(state=Status.PROCESSING)
    store.insert([waiting, running])
    cancelled = store.cancel_waiting(waiting.id, now())
    assert cancelled is not None
    assert cancelled.state is Status.CANCELLED
    assert store.cancel_waiting(running.id, now()) is None
    assert store.request_cancel(running.id) is True
    got = store.get(running.id)
    assert got is not None
    assert got.cancel_requested
    assert store.request_cancel(waiting.id) is False  # finished


def test_query_filters_by_tenant_state_type_and_pages(store: Store) -> None:
    t0 = now()
    records = [rec(created_at=t0 + i, type="t.even" if i % 2 == 0 else "t.odd") for i in range(7)]
    records.append(rec(tenant="b", created_at=t0 + 100))
    store.insert(records)
    page = store.query(TaskQuery(tenant="a", limit=3))
    assert page.total == 7
    assert [r.id for r in page.items] == [r.id for r in reversed(records[4:7])]
    page2 = store.query(TaskQuery(tenant="a", limit=3, offset=6))
    assert [r.id for r in page2.items] == [records[0].id]
    evens = store.query(TaskQuery(tenant="a", types=["t.even"]))
    assert evens.total == 4
    assert store.query(TaskQuery(tenant="a", states=[Status.SUCCESS])).total == 0
    assert store.query(TaskQuery(tenant="a", id_prefix=records[3].id[:8])).items[0].id == records[3].id


def test_leases_are_renewed_and_expired_ones_recovered(store: Store) -> None:
    t = now()
    mine = rec(worker="w1", lease_expires_at=t + 60, executor="local")
    lapsed = rec(worker="w2", lease_expires_at=t - 1, executor="local")
    dead = rec(worker="w3", lease_expires_at=t + 60, executor="local")
    done = rec(worker="w2", lease_expires_at=t - 1, state=Status.SUCCESS, executor="local")
    store.insert([mine, lapsed, dead, done])
    found = {r.id for r in store.recoverable("local", t, dead_workers=["w3"])}
    assert found == {lapsed.id, dead.id}
    claimed = store.claim([lapsed.id, done.id], "w9", t + 30)
    assert [r.id for r in claimed] == [lapsed.id]
    assert store.renew_leases("w9", t + 99) == 1
    got = store.get(lapsed.id)
    assert got is not None
    assert got.lease_expires_at == t + 99
    assert store.held_by("w") == ["w1", "w3", "w9"]


def test_a_claim_takes_a_task_only_while_its_holder_is_gone(store: Store) -> None:
    """Two recoverers that both saw a lapsed lease: the second finds the first's fresh one and gets nothing."""
    t = now()
    lapsed = rec(worker="w1", lease_expires_at=t - 1, executor="local")
    held = rec(worker="w2", lease_expires_at=t + 60, executor="local")
    dead = rec(worker="w3", lease_expires_at=t + 60, executor="local")
    store.insert([lapsed, held, dead])
    first = store.claim([lapsed.id, held.id, dead.id], "r1", t + 30, at=t, dead_workers=["w3"])
    assert sorted(r.id for r in first) == sorted([lapsed.id, dead.id])
    assert store.claim([lapsed.id, held.id, dead.id], "r2", t + 30, at=t, dead_workers=["w3"]) == []
    got = store.get(lapsed.id)
    assert got is not None
    assert got.worker == "r1"


def test_expired_finished_records_are_purged(store: Store) -> None:
    t = now()
    old = rec(state=Status.SUCCESS, expires_at=t - 1)
    fresh = rec(state=Status.SUCCESS, expires_at=t + 100)
    forever = rec(state=Status.FAILURE, expires_at=None)
    running = rec(state=Status.PROCESSING, expires_at=t - 1)
    store.insert([old, fresh, forever, running])
    assert store.purge_expired(t) == 1
    assert store.get(old.id) is None
    assert all(store.get(r.id) is not None for r in (fresh, forever, running))


def test_queue_stats_count_states_per_queue(store: Store) -> None:
    store.insert([rec(queue="documents"), rec(queue="documents", state=Status.PROCESSING), rec(queue="media")])
    stats = {q.queue: q for q in store.queue_stats()}
    assert stats["documents"].counts == {"PENDING": 1, "PROCESSING": 1}
    assert stats["documents"].depth == 1
    assert store.count_unfinished("a") == 3


def test_reset_only_from_the_named_states(store: Store) -> None:
    failed = rec(state=Status.FAILURE)
    store.insert([failed])
    assert store.reset(failed.id, {"state": Status.PENDING}, [Status.SUCCESS]) is None
    reset = store.reset(failed.id, {"state": Status.PENDING, "error": None}, [Status.FAILURE])
    assert reset is not None
    assert reset.state is Status.PENDING


def test_a_run_is_claimed_once_and_reclaimed_only_after_its_lease_lapses(store: Store) -> None:
    """Two workers receiving one task's message: one runs it; a lapsed lease lets another take over."""
    t = now()
    r = rec(executor="celery")
    store.insert([r])
    first = store.start_run(r.id, "w1", t + 30, t)
    assert first is not None
    assert (first.state, first.worker, first.attempts) == (Status.PROCESSING, "w1", 1)
    assert store.start_run(r.id, "w2", t + 30, t + 1) is None  # w1's lease holds
    again = store.start_run(r.id, "w2", t + 90, t + 31)  # w1 died: its lease lapsed
    assert again is not None
    assert (again.worker, again.attempts) == ("w2", 2)
    assert store.held_by("w") == ["w2"]
    store.apply([Change(r.id, {"state": Status.SUCCESS, "finished_at": t + 40}, [])])
    assert store.start_run(r.id, "w3", t + 200, t + 100) is None  # finished
    assert store.start_run("unknown", "w3", t + 200, t) is None
    steps = [e.message for e in store.events(r.id) if e.kind == "state"]
    assert steps == ["Started", "Started"]


def test_many_workers_claiming_one_message_at_once_run_it_once(store: Store) -> None:
    """The claim is atomic: duplicate messages of one task (a reaper's re-send) start it once."""
    import threading

    t = now()
    r = rec(executor="celery")
    store.insert([r])
    gate = threading.Barrier(8)
    won: list[str] = []

    def claim(worker: str) -> None:
        gate.wait()
        if store.start_run(r.id, worker, t + 30, t) is not None:
            won.append(worker)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(won) == 1
    record = store.get(r.id)
    assert record is not None
    assert (record.worker, record.attempts) == (won[0], 1)
    assert [e.message for e in store.events(r.id) if e.kind == "state"] == ["Started"]


def test_waiting_tasks_past_their_deadline_are_overdue_longest_first(store: Store) -> None:
    """What the Celery reaper asks: PENDING tasks of one executor whose ``expected_by`` has passed."""
    t = now()
    late = rec(executor="celery", expected_by=t - 10)
    later = rec(executor="celery", expected_by=t - 100)
    not_yet = rec(executor="celery", expected_by=t + 60)
    no_deadline = rec(executor="celery")
    local = rec(executor="local", expected_by=t - 100)
    started = rec(executor="celery", expected_by=t - 100)
    store.insert([late, later, not_yet, no_deadline, local, started])
    assert store.start_run(started.id, "w1", t + 30, t) is not None
    assert [r.id for r in store.overdue("celery", t)] == [later.id, late.id]
    assert [r.id for r in store.overdue("celery", t, limit=1)] == [later.id]
    assert store.reset(later.id, {"expected_by": t + 600}, [Status.PENDING]) is not None
    assert [r.id for r in store.overdue("celery", t)] == [late.id]
    got = store.get(late.id)
    assert got is not None
    assert got.expected_by == t - 10


def _finish(store: Store, record: TaskRecord, state: Status, at: float) -> None:
    store.apply([Change(record.id, {"state": state, "finished_at": at, "updated_at": at}, [])])


def test_throughput_counts_finished_tasks_per_bucket_and_state(store: Store) -> None:
    """Finishes are counted per bucket and final state, for one tenant or all, from ``since`` on."""
    base = (int(now()) // 60) * 60 - 600.0  # a minute boundary ten minutes ago
    a = [rec() for _ in range(6)]
    b = rec(tenant="b")
    running = rec(state=Status.PROCESSING)
    store.insert([*a, b, running])
    _finish(store, a[0], Status.SUCCESS, base + 1)
    _finish(store, a[1], Status.SUCCESS, base + 59)
    _finish(store, a[2], Status.FAILURE, base + 30)
    _finish(store, a[3], Status.CANCELLED, base + 61)
    _finish(store, a[4], Status.SUCCESS, base - 3600)  # before the window
    _finish(store, b, Status.SUCCESS, base + 5)
    since = base - 60

    mine = store.throughput("a", since, 60)
    assert [(x.start, x.success, x.failure, x.cancelled) for x in mine] == [(base, 2, 1, 0), (base + 60, 0, 0, 1)]
    assert mine[0].total == 3
    everyone = store.throughput(None, since, 60)
    assert [(x.start, x.success) for x in everyone] == [(base, 3), (base + 60, 0)]
    coarse = store.throughput("a", since, 3600)
    assert sum(x.total for x in coarse) == 4
    assert all(x.start % 3600 == 0 for x in coarse)
    assert store.throughput("nobody", since, 60) == []


def test_batches_and_lease_renewals_on_the_same_tasks_never_deadlock(store: Store) -> None:
    """A writer's batch and a lease renewal may touch the same rows at the same moment.

    The batch updates one row per group of fields in whatever order changes
    came in; the renewal updates every row the worker holds. On PostgreSQL
    both must lock the rows in one order, or one of them dies of a deadlock.
    """
    import threading

    t = now()
    held = [rec(state=Status.PROCESSING, worker="w1", lease_expires_at=t + 30) for _ in range(8)]
    store.insert(held)
    ids = sorted(r.id for r in held)
    errors: list[BaseException] = []
    stop = threading.Event()

    def batches() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            # Highest id first, each row with its own set of fields: one UPDATE per row, in reverse order.
            changes = [
                Change(task_id, {"progress": float(i % 100), **({"message": f"m{i}"} if n % 2 else {})})
                for n, task_id in enumerate(reversed(ids))
            ]
            try:
                store.apply(changes)
            except BaseException as e:
                errors.append(e)
                return

    writer = threading.Thread(target=batches)
    writer.start()
    try:
        for k in range(400):
            store.renew_leases("w1", t + 60 + k)
    except BaseException as e:
        errors.append(e)
    finally:
        stop.set()
        writer.join()
    assert not errors, errors
    assert all(r is not None and r.lease_expires_at == t + 60 + 399 for r in map(store.get, ids))


@pytest.mark.postgres
def test_a_claim_survives_the_server_dropping_its_pooled_connection(clean_postgres_url: str) -> None:
    """PostgreSQL claims run on connections that are not pinged first: a dropped one is replaced once."""
    import sqlalchemy as sa

    from conveyor.stores.sql import SqlStore

    store = open_store(Settings(database_url=clean_postgres_url).resolved_database_url)
    assert isinstance(store, SqlStore)
    store.open()
    try:
        t = now()
        first, second = rec(executor="celery"), rec(executor="celery")
        store.insert([first, second])
        assert store.start_run(first.id, "w1", t + 30, t) is not None  # a claim connection is now pooled
        with store._claim_engine().connect() as pooled:  # the one the next claim gets back
            pid = pooled.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        # Only that connection: other tests' workers share this database.
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
        claimed = store.start_run(second.id, "w1", t + 30, t)
        assert claimed is not None
        assert claimed.state is Status.PROCESSING
    finally:
        store.close()


@pytest.mark.parametrize(
    "url", ["postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2", "redis://127.0.0.1:1/0"]
)
def test_an_unreachable_store_fails_its_ping_with_a_store_error(url: str) -> None:
    """Port 1 answers nobody: ping says so as StoreError (the 503 of /health), never a driver's own error."""
    from conveyor.errors import StoreError

    store = open_store(url)
    with pytest.raises(StoreError):
        store.ping()
