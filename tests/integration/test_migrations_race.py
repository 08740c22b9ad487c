"""Several processes opening one fresh database at once: one migrates, the others wait, none fails."""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path

import pytest

from conveyor.settings import Settings

PROCESSES = 4


def _open(url: str, barrier: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue[str]) -> None:
    from conveyor.stores.sql import SqlStore

    try:
        store = SqlStore(Settings(database_url=url).resolved_database_url)
        barrier.wait(30)
        store.open()
        store.close()
        results.put("ok")
    except Exception as e:  # reported to the test, which names it
        results.put(f"{type(e).__name__}: {e}")


def open_at_once(url: str) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results: multiprocessing.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_open, args=(url, barrier, results)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    return outcomes


def test_processes_racing_to_migrate_a_fresh_sqlite_file_all_succeed(tmp_path: Path) -> None:
    assert open_at_once(f"sqlite:///{tmp_path / 'fresh.db'}") == ["ok"] * PROCESSES


@pytest.mark.postgres
def test_processes_racing_to_migrate_a_fresh_postgresql_database_all_succeed(postgres_url: str) -> None:
    import sqlalchemy as sa

    name = f"conveyor_race_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(Settings(database_url=postgres_url).resolved_database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        assert open_at_once(f"{postgres_url.rsplit('/', 1)[0]}/{name}") == ["ok"] * PROCESSES
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
