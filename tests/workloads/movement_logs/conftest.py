"""Fixtures of the movement logs tests: engines with the workload's tables, a Redis of the test's own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from tests.conftest import REDIS_URL, require_service

SEED_BODY: dict[str, Any] = {
    "user_id": "USER123",
    "track_id": 1,
    "bbox": [100, 100, 200, 200],
    "state": "walking",
    "store": "Store A",
}
#: Redis database of these tests on the Redis they are given (CONVEYOR_TEST_REDIS)
LOGS_DB = 9


def redis_url(db: int = LOGS_DB) -> str:
    """The test Redis database ``db``, emptied (the Redis CONVEYOR_TEST_REDIS names)."""
    parts = urlsplit(REDIS_URL)
    require_service("Redis", parts.hostname or "127.0.0.1", parts.port or 6379)
    import redis

    url = f"{REDIS_URL.rstrip('/')}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


def empty_log_tables(url: str) -> None:
    """Migrate the database (the core's and this workload's branch) and empty the workload's tables."""
    from conveyor.stores.sql import create_engine_for, upgrade
    from conveyor.workloads.movement_logs import workload
    from conveyor.workloads.movement_logs.tables import metadata

    assert workload.migrations is not None
    engine = create_engine_for(url.replace("postgresql://", "postgresql+psycopg://"))
    upgrade(engine, migrations={"movement_logs": workload.migrations})
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A SQLite file, then the session's PostgreSQL database, with the workload's tables empty."""
    from conveyor.stores.sql import create_engine_for

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'logs.db'}"
    else:
        url = request.getfixturevalue("postgres_url").replace("postgresql://", "postgresql+psycopg://")
    empty_log_tables(url)
    eng = create_engine_for(url)
    yield eng
    eng.dispose()


def item(i: int, tenant: str = "local", **fields: Any) -> str:
    """One queue item as the API encodes it."""
    from conveyor.workloads.movement_logs.models import MovementIn, encode_item

    body = {**SEED_BODY, "user_id": f"USER{i}", "track_id": i, **fields}
    return encode_item(MovementIn.model_validate(body), tenant, time.time())[1]
