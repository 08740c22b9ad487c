"""The submit path on SQL stores: durable ids, shared commits, and ``submit_many`` with an answer per task.

Run on SQLite and PostgreSQL. A returned id must be readable at once from a
connection that did not write it (the commit happened before the answer);
eight concurrent submitters share commits yet every task is stored once.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from conveyor import Conveyor, Status, SubmitRequest, TaskQuery, TaskRecord
from conveyor.errors import InvalidParams, QuotaExceeded, UnknownTaskType
from conveyor.stores.sql import SqlStore
from tests.conftest import AppFactory

SUBMITTERS = 8
PER_SUBMITTER = 100


def _app(make_app: AppFactory, url: str, **overrides: Any) -> Conveyor:
    overrides.setdefault("max_unfinished_per_tenant", 100_000)
    return make_app(database_url=url, workloads=["system"], scheduler=False, **overrides)


def _new_connection(app: Conveyor) -> sa.Engine:
    """An engine of its own on the app's database: it sees only what was committed."""
    return sa.create_engine(app.engine.url, poolclass=sa.NullPool)


def _stored(engine: sa.Engine, task_id: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT 1 FROM conveyor_tasks WHERE id = :id"), {"id": task_id}).first() is not None


def _in_threads(n: int, work: Any) -> list[Any]:
    answers: list[Any] = [None] * n
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        try:
            answers[i] = work(i)
        except Exception as e:
            answers[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return answers


def test_eight_concurrent_submitters_share_commits_and_each_returned_id_is_already_committed(
    make_app: AppFactory, sql_database_url: str
) -> None:
    """Every id is read back from a separate connection the moment it is returned; no task is lost or doubled."""
    app = _app(make_app, sql_database_url)
    reader = _new_connection(app)
    store = app.store
    assert isinstance(store, SqlStore)

    def submitter(_: int) -> list[str]:
        ids = []
        for _ in range(PER_SUBMITTER):
            task_id = app.manager.submit("system.ping")
            assert _stored(reader, task_id), f"{task_id} returned before it was committed"
            ids.append(task_id)
        return ids

    answers = _in_threads(SUBMITTERS, submitter)
    assert not [a for a in answers if isinstance(a, Exception)], answers
    ids = [i for a in answers for i in a]
    assert len(set(ids)) == SUBMITTERS * PER_SUBMITTER
    with reader.connect() as conn:
        stored = conn.execute(sa.text("SELECT COUNT(*), COUNT(DISTINCT id) FROM conveyor_tasks")).one()
    assert tuple(stored) == (len(ids), len(ids))
    assert store.inserts.writes == len(ids)
    # Shared commits: fewer commits than submits (the aim of group commit).
    assert store.inserts.commits < store.inserts.writes
    reader.dispose()


def test_concurrent_submits_with_one_idempotency_key_make_one_task(make_app: AppFactory, sql_database_url: str) -> None:
    """A clash inside a shared commit fails no other submitter and answers each with the one task."""
    app = _app(make_app, sql_database_url)

    def submitter(i: int) -> list[str]:
        # Every submitter sends the shared key once among submits of its own.
        ids = [app.manager.submit("system.ping", payload=f"{i}-{n}") for n in range(5)]
        ids.append(app.manager.submit_task("system.ping", {}, idempotency_key="the-one").id)
        ids += [app.manager.submit("system.ping", payload=f"{i}-{n}") for n in range(5, 10)]
        return ids

    answers = _in_threads(SUBMITTERS, submitter)
    assert not [a for a in answers if isinstance(a, Exception)], answers
    assert len({a[5] for a in answers}) == 1
    others = [i for a in answers for i in a[:5] + a[6:]]
    assert len(set(others)) == SUBMITTERS * 10
    page = app.store.query(TaskQuery(limit=1000))
    assert page.total == SUBMITTERS * 10 + 1


def test_submit_many_answers_each_request_and_a_bad_one_refuses_only_itself(
    make_app: AppFactory, sql_database_url: str
) -> None:
    app = _app(make_app, sql_database_url)
    answers = app.submit_many(
        [
            SubmitRequest("system.ping", {"payload": "a"}),
            SubmitRequest("no.such.type"),
            SubmitRequest("system.sleep", {"seconds": "soon"}),
            SubmitRequest("system.ping", {"payload": "keyed"}, idempotency_key="k1"),
            SubmitRequest("system.ping", {"payload": "keyed again"}, idempotency_key="k1"),
            SubmitRequest("system.ping", queue="nowhere"),
            SubmitRequest("system.ping", priority=12),
            SubmitRequest("system.ping", {"payload": "b"}, task_id="chosen-id-1"),
        ]
    )
    assert len(answers) == 8
    assert isinstance(answers[1], UnknownTaskType)
    assert isinstance(answers[2], InvalidParams)
    assert isinstance(answers[5], InvalidParams)
    assert isinstance(answers[6], InvalidParams)
    good = [answers[i] for i in (0, 3, 7)]
    assert all(isinstance(r, TaskRecord) for r in good)
    assert answers[4] == answers[3]  # the same key in one batch names the same task
    assert isinstance(answers[7], TaskRecord)
    assert answers[7].id == "chosen-id-1"
    for record in good:
        assert isinstance(record, TaskRecord)
        assert app.manager.wait(record.id, timeout=30).state is Status.SUCCESS
    assert app.store.query(TaskQuery(limit=100)).total == 3
    # Submitting the same key or id again returns the stored task.
    again = app.submit_many(
        [SubmitRequest("system.ping", idempotency_key="k1"), SubmitRequest("system.ping", task_id="chosen-id-1")]
    )
    assert [getattr(r, "id", None) for r in again] == [answers[3].id, "chosen-id-1"]  # type: ignore[union-attr]


def test_submit_many_writes_its_tasks_in_one_commit(make_app: AppFactory, sql_database_url: str) -> None:
    app = _app(make_app, sql_database_url)
    store = app.store
    assert isinstance(store, SqlStore)
    before = store.inserts.commits
    answers = app.submit_many([SubmitRequest("system.ping", {"payload": str(i)}) for i in range(2000)])
    assert all(isinstance(r, TaskRecord) for r in answers)
    assert store.inserts.commits == before + 1
    reader = _new_connection(app)
    with reader.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM conveyor_tasks")).scalar_one() == 2000
    reader.dispose()


def test_submit_many_past_a_tenant_quota_refuses_that_tenants_tasks_and_keeps_the_others(
    make_app: AppFactory, sql_database_url: str
) -> None:
    app = _app(make_app, sql_database_url, max_unfinished_per_tenant=3)
    answers = app.submit_many(
        [SubmitRequest("system.ping", tenant="big") for _ in range(4)] + [SubmitRequest("system.ping", tenant="small")]
    )
    assert all(isinstance(r, QuotaExceeded) for r in answers[:4])
    assert isinstance(answers[4], TaskRecord)
    assert app.store.query(TaskQuery(limit=10)).total == 1


@pytest.mark.parametrize("n", [1, 3])
def test_a_batch_with_a_key_that_another_submit_took_meanwhile_answers_with_that_task(
    make_app: AppFactory, sql_database_url: str, n: int
) -> None:
    """The insert's clash (not the lookup before it) is resolved per request: the rest of the batch is written."""
    app = _app(make_app, sql_database_url)
    store = app.store
    assert isinstance(store, SqlStore)
    winner = app.manager.submit_task("system.ping", idempotency_key="raced")
    real_find = store.find_by_idempotency_key
    requests = [SubmitRequest("system.ping", idempotency_key="raced")]
    requests += [SubmitRequest("system.ping", {"payload": str(i)}) for i in range(n - 1)]
    # The race, injected: the lookup before the insert misses the task another submit has just written.
    store.find_by_idempotency_key = _after_first_call(real_find)  # type: ignore[method-assign]
    try:
        answers = app.submit_many(requests)
    finally:
        store.find_by_idempotency_key = real_find  # type: ignore[method-assign]
    assert isinstance(answers[0], TaskRecord)
    assert answers[0].id == winner.id
    assert all(isinstance(r, TaskRecord) for r in answers[1:])
    assert app.store.query(TaskQuery(limit=10)).total == n


def _after_first_call(real: Any) -> Any:
    """``find_by_idempotency_key`` that misses once (the lookup before the insert), then answers truly."""
    calls = {"n": 0}

    def find(tenant: str, key: str) -> Any:
        calls["n"] += 1
        return None if calls["n"] == 1 else real(tenant, key)

    return find
