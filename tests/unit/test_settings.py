"""Settings come from CONVEYOR_* variables; URLs are mapped to the shipped drivers."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from conveyor import Settings
from conveyor.errors import ConfigurationError


def test_a_plain_postgresql_url_uses_the_psycopg3_driver() -> None:
    s = Settings(database_url="postgresql://user@db.example/app")
    assert s.resolved_database_url == "postgresql+psycopg://user@db.example/app"
    assert Settings(database_url="postgres://u@h/d").resolved_database_url.startswith("postgresql+psycopg://")


def test_the_default_store_is_sqlite_inside_the_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.resolved_database_url == f"sqlite:///{tmp_path / 'conveyor.db'}"
    assert s.store_kind == "sql"
    assert Settings(database_url="redis://localhost/1").store_kind == "redis"


def test_api_keys_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_API_KEYS", "k1=alpha, k2=beta")
    monkeypatch.setenv("CONVEYOR_CONCURRENCY", "3")
    monkeypatch.setenv("CONVEYOR_MAX_BODY_MB", "0.5")
    s = Settings()
    assert s.api_keys == {"k1": "alpha", "k2": "beta"}
    assert s.concurrency == 3
    assert s.max_body_bytes == 512 * 1024
    monkeypatch.setenv("CONVEYOR_API_KEYS", '{"k3": "gamma"}')
    assert Settings().api_keys == {"k3": "gamma"}


def test_a_malformed_api_key_entry_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_API_KEYS", "just-a-key")
    with pytest.raises(ValidationError, match="key=tenant"):
        Settings()


def test_the_documents_workload_is_on_by_default_where_it_can_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loaded by default with its extra and a SQL store; left out otherwise (with the reason), unless named."""
    import dataclasses

    import conveyor.workloads.documents as documents
    from conveyor.workload import load_workloads

    monkeypatch.delenv("CONVEYOR_WORKLOADS", raising=False)
    assert Settings().workloads is None
    on_sql = load_workloads(None, store_kind="sql").names()
    assert on_sql[:2] == ["system", "documents"]
    on_redis = load_workloads(None, store_kind="redis")
    assert "documents" not in on_redis.names()
    assert "SQL store" in on_redis.skipped["documents"]
    lacking = dataclasses.replace(documents.workload, requires=("a_module_nobody_installed",))
    monkeypatch.setattr(documents, "workload", lacking)
    missing = load_workloads(None, store_kind="sql")
    assert "documents" not in missing.names()
    assert "pip install 'conveyor[documents]'" in missing.skipped["documents"]
    with pytest.raises(ConfigurationError, match=r"conveyor\[documents\]"):
        load_workloads(["system", "documents"], store_kind="sql")  # asked for: a loud error


def test_the_local_lanes_are_read_as_processes_per_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_QUEUES", "default:2, documents:1")
    assert Settings().queues == {"default": 2, "documents": 1}
    monkeypatch.setenv("CONVEYOR_QUEUES", '{"media": 3}')
    assert Settings().queues == {"media": 3}
    monkeypatch.delenv("CONVEYOR_QUEUES")
    assert Settings().queues == {}
    for bad in ("documents", "documents:none", "documents:0", ":2"):
        monkeypatch.setenv("CONVEYOR_QUEUES", bad)
        with pytest.raises(ValidationError):
            Settings()
