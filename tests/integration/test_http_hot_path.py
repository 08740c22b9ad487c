"""The API's fast paths answer exactly what the general ones did: SQLite reads, key look-up, pooled connections."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from conveyor.api.main import create_app
from conveyor.records import Status, TaskRecord, now
from conveyor.stores.sql import SqlStore
from conveyor.stores.sql_schema import SQLITE_POOL, record_from_row, tasks_table
from tests.conftest import AppFactory


def _record(**fields: Any) -> TaskRecord:
    t = now()
    base: dict[str, Any] = {
        "id": "t-1",
        "type": "system.ping",
        "queue": "default",
        "tenant": "alpha",
        "params": {"payload": "é", "n": [1, 2.5, None]},
        "created_at": t,
        "updated_at": t,
        "message": "Queued",
    }
    return TaskRecord(**{**base, **fields})


def test_a_sqlite_read_on_the_loop_returns_the_record_sqlalchemy_reads(tmp_path: Path) -> None:
    """Every column (JSON, booleans, nulls, floats) comes back as the SQLAlchemy path decodes it, and a
    change committed by the writer is seen at once (no read snapshot held open)."""
    store = SqlStore(f"sqlite:///{tmp_path / 'c.db'}")
    store.open()
    try:
        assert store.reads_inline
        store.insert([_record(meta={"k": {"v": 1}}, cancel_requested=True, eta=1.5, idempotency_key="key")])
        with store.engine.connect() as conn:
            row = conn.execute(tasks_table.select().where(tasks_table.c.id == "t-1")).first()
        assert row is not None
        assert store.get("t-1") == record_from_row(row)
        assert store.get("nobody") is None
        store.insert([_record(id="t-2", result=None)])
        first = store.get("t-2")
        assert first is not None
        assert first.state is Status.PENDING
        with store.engine.begin() as conn:
            conn.execute(
                tasks_table.update().where(tasks_table.c.id == "t-2").values(state="SUCCESS", result=[{"a": 1}])
            )
        again = store.get("t-2")
        assert again is not None
        assert again.state is Status.SUCCESS
        assert again.result == [{"a": 1}]
    finally:
        store.close()


def test_an_in_memory_sqlite_store_reads_through_its_own_engine() -> None:
    """A second connection to ``:memory:`` would be another, empty database."""
    store = SqlStore("sqlite:///:memory:")
    try:
        assert not store.reads_inline
    finally:
        store.close()


def test_concurrent_reads_reuse_pooled_sqlite_connections(tmp_path: Path) -> None:
    """32 threads reading at once, ten times over, open at most SQLITE_POOL connections: none is
    opened (and its PRAGMAs run) and thrown away per request."""
    store = SqlStore(f"sqlite:///{tmp_path / 'c.db'}")
    store.open()
    opened = []
    sa.event.listen(store.engine, "connect", lambda *_: opened.append(1))
    try:
        store.insert([_record()])
        barrier = threading.Barrier(32, timeout=30)

        def read() -> None:
            barrier.wait()
            with store.engine.connect() as conn:
                conn.execute(sa.text("SELECT count(*) FROM conveyor_tasks")).scalar_one()

        for _ in range(10):
            threads = [threading.Thread(target=read) for _ in range(32)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        assert len(opened) <= SQLITE_POOL
    finally:
        store.close()


def test_a_replaced_key_set_takes_effect_and_an_operator_key_wins(make_app: AppFactory, tmp_path: Path) -> None:
    """Keys are looked up in a table built once per key set: replacing the set rebuilds it; a key
    listed both as a tenant's and an operator's is the operator's."""
    app = make_app(
        start=False,
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        api_keys="k1=alpha,shared=beta",
        operator_keys="shared=ops",
    )
    with TestClient(create_app(app, scheduler=False)) as client:

        def whoami(key: str) -> Any:
            r = client.get("/api/v1/tasks", headers={"Authorization": f"Bearer {key}"})
            return r.status_code

        assert whoami("k1") == 200
        assert whoami("k2") == 401
        assert client.get("/api/v1/queues", headers={"Authorization": "Bearer shared"}).status_code == 200
        app.settings.api_keys = {"k2": "alpha"}
        assert whoami("k2") == 200
        assert whoami("k1") == 401
