"""A workload's own SQL or Redis call that finds its server down answers 503 naming it, never a 500.

The store's calls already map outages to ``StoreError``; workloads also run
SQL on the engine and commands on Redis themselves (documents, speech,
movement logs). Each route below calls a real client against a port nobody
listens on, so the exception is the one a dead server gives.
"""

from __future__ import annotations

import socket

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from conveyor.api.errors import install_error_handlers


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def client(tmp_path: object) -> TestClient:
    port = closed_port()
    api = FastAPI()
    install_error_handlers(api)
    dead_pg = sa.create_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{port}/test", connect_args={"connect_timeout": 2}
    )
    sqlite = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False})
    with sqlite.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))

    @api.get("/sql")
    def sql() -> int:
        with dead_pg.connect() as conn:
            return int(conn.execute(sa.text("SELECT 1")).scalar_one())

    @api.get("/redis")
    def redis_call() -> int:
        import redis

        return int(redis.Redis(port=port, socket_connect_timeout=2).llen("movement_logs"))

    @api.get("/duplicate")
    def duplicate() -> None:
        with sqlite.begin() as conn:
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))

    @api.get("/typo")
    def typo() -> None:
        with sqlite.connect() as conn:
            conn.execute(sa.text("SELEC 1"))  # SQLite calls this an OperationalError too

    return TestClient(api, raise_server_exceptions=False)


def test_a_dead_database_under_a_workloads_own_sql_is_a_503_naming_the_database(client: TestClient) -> None:
    r = client.get("/sql")
    assert r.status_code == 503
    assert r.headers["Retry-After"].isdigit()
    error = r.json()["error"]
    assert error["code"] == "store_unavailable"
    assert error["details"] == {"dependency": "database"}
    assert "127.0.0.1" not in error["message"]  # the driver's text (hosts, ports) is not passed on


def test_a_dead_redis_under_a_workloads_own_call_is_a_503_naming_redis(client: TestClient) -> None:
    r = client.get("/redis")
    assert r.status_code == 503
    assert r.headers["Retry-After"].isdigit()
    assert r.json()["error"]["details"] == {"dependency": "redis"}


@pytest.mark.parametrize("route", ["/duplicate", "/typo"])
def test_a_constraint_violation_or_a_bad_statement_is_a_bug_and_stays_a_500(client: TestClient, route: str) -> None:
    r = client.get(route)
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"


@pytest.mark.parametrize("scheme", ["postgresql", "redis"])
def test_a_store_outage_says_what_kind_it_is_and_keeps_the_host_for_the_log(scheme: str) -> None:
    """The message a tenant reads names no host or port; the driver's words stay on the exception's cause."""
    from conveyor.errors import StoreError
    from conveyor.stores.redis import RedisStore
    from conveyor.stores.sql import SqlStore

    port = closed_port()
    if scheme == "postgresql":
        store: SqlStore | RedisStore = SqlStore(f"postgresql://postgres@127.0.0.1:{port}/test", migrate=False)
    else:
        store = RedisStore(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(StoreError) as caught:
        store.get("01a23587-0000-7000-8000-000000000000")
    assert str(caught.value).endswith("unavailable: connection refused")
    assert str(port) not in str(caught.value)
    assert str(port) in str(caught.value.__cause__)
