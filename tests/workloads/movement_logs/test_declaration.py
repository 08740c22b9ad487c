"""The workload's declaration: light to import, left out (with its reason) where there is no SQL, migrated as coded."""

from __future__ import annotations

import subprocess
import sys

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conveyor.api.main import create_app
from conveyor.errors import ConfigurationError
from tests.conftest import AppFactory


def test_importing_the_declaration_loads_no_redis_client() -> None:
    """``import conveyor.workloads.movement_logs`` works without the extra: redis is imported only when used."""
    code = "import sys, conveyor.workloads.movement_logs as m; print(m.workload.name, 'redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["movement_logs", "False"]


def test_without_a_sql_store_it_is_not_loaded_and_health_says_why(make_app: AppFactory) -> None:
    """Named on the in-memory store it is a configuration error; by default it is left out with its reason."""
    with pytest.raises(ConfigurationError, match="SQL store"):
        make_app(start=False, database_url="memory://", workloads=["system", "movement_logs"])
    app = make_app(start=False, database_url="memory://")
    with TestClient(create_app(app, scheduler=False)) as client:
        assert client.post("/api/logs/add-movement/", json={}).status_code == 404
        status = client.get("/health").json()["workloads"]["movement_logs"]
        assert status["status"] == "not loaded"
        assert "SQL store" in status["reason"]


def test_the_migration_creates_the_tables_the_code_uses(make_app: AppFactory, sql_database_url: str) -> None:
    """The movement_logs_0001 migration and tables.py agree on every table and column, on SQLite and PostgreSQL."""
    from conveyor.workloads.movement_logs.tables import metadata

    app = make_app(database_url=sql_database_url, workloads=["system", "movement_logs"], run_executor=False)
    inspector = sa.inspect(app.engine)
    for table in metadata.sorted_tables:
        assert {c["name"] for c in inspector.get_columns(table.name)} == {c.name for c in table.columns}, table.name
    assert inspector.get_pk_constraint("movement_logs")["constrained_columns"] == ["tenant", "event_id"]
    if app.engine.dialect.name == "postgresql":
        checks = {c["name"] for c in inspector.get_check_constraints("movement_logs")}
        assert "ck_movement_logs_valid" in checks
