"""A database made before workloads had migrations of their own upgrades in place, nothing lost.

The previous layout kept the documents tables in the core's history (revision
0002, then 0003 on top). Here such a database is made with exactly those
revisions (the 0002 file as it was shipped is kept in tests/fixtures), holding a
task and a document; opening it with this version's store must keep both and
leave each history in its own version table.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from conveyor import Settings
from conveyor.stores.sql import VERSION_TABLE, SqlStore, create_engine_for
from conveyor.stores.sql_schema import MIGRATIONS
from conveyor.workloads.documents import workload
from tests.conftest import PG_ADMIN_URL, require_service

OLD_0002 = Path(__file__).resolve().parents[1] / "fixtures" / "migrations_0002_documents.py"


def make_previous_head(engine: sa.Engine, folder: Path, revision: str) -> None:
    """Run the old history (core 0001 → documents 0002 → core 0003) up to ``revision``."""
    from alembic import command
    from alembic.config import Config

    versions = folder / "versions"
    versions.mkdir(parents=True)
    shutil.copy(MIGRATIONS / "versions" / "0001_tasks.py", versions)
    shutil.copy(OLD_0002, versions / "0002_documents.py")
    old_0003 = (MIGRATIONS / "versions" / "0003_finished_index.py").read_text()
    (versions / "0003_finished_index.py").write_text(
        old_0003.replace('down_revision = "0001"', 'down_revision = "0002"')
    )
    shutil.copy(MIGRATIONS / "env.py", folder)
    shutil.copy(MIGRATIONS / "script.py.mako", folder)
    cfg = Config()
    cfg.set_main_option("script_location", str(folder))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """A PostgreSQL database of this test's own, with no tables at all."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"conveyor_old_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.parametrize("revision", ["0002", "0003"])
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_database_of_the_previous_layout_upgrades_without_loss(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, revision: str
) -> None:
    """Rows survive; the core and the documents workload each record their own revision."""
    if backend == "sqlite":
        url = Settings(database_url=f"sqlite:///{tmp_path / 'old.db'}").resolved_database_url
    else:
        url = Settings(database_url=request.getfixturevalue("empty_postgres_url")).resolved_database_url
    engine = create_engine_for(url)
    make_previous_head(engine, tmp_path / "old-migrations", revision)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO conveyor_documents (id, tenant, filename, stored_path, size_bytes, sha256, status, "
                "processing_progress, created_at, updated_at) VALUES ('d1', 'alpha', 'a.txt', '/x', 3, :sha, "
                "'ready', 100, 1, 1)"
            ),
            {"sha": "0" * 64},
        )
    store = SqlStore(url, migrations={"documents": workload.migrations})
    store.open()
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT filename FROM conveyor_documents")).scalars().all() == ["a.txt"]
            assert conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == ["0004"]
            documents = conn.execute(sa.text("SELECT version_num FROM conveyor_documents_alembic_version"))
            assert documents.scalars().all() == ["documents_0002"]
            indexes = {i["name"] for i in sa.inspect(conn).get_indexes("conveyor_tasks")}
        assert any("finished" in name for name in indexes)  # 0003 ran (or had run) on the upgraded core
        store.open()  # and a second start is a no-op
    finally:
        store.close()
        engine.dispose()
