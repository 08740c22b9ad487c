"""The SQL store's schema and engine: tables, row mapping, engines per backend, and the migrations.

The schema is owned by the Alembic migrations in ``migrations/``; ``upgrade``
brings a database to the newest revision of the core and of each workload.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine

from conveyor.records import RECORD_FIELDS, Status, TaskEvent, TaskRecord
from conveyor.stores.deadlines import Deadlines, pg_connect, pg_connect_args, unbounded
from conveyor.stores.fork_guard import IN_USE, SQLiteConnection

__all__ = [
    "MIGRATIONS",
    "VERSION_TABLE",
    "claim_statements",
    "create_engine_for",
    "events_table",
    "metadata",
    "record_from_row",
    "row_from_record",
    "tasks_table",
    "upgrade",
]

MIGRATIONS = Path(__file__).with_name("migrations")

metadata = sa.MetaData()
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

tasks_table = sa.Table(
    "conveyor_tasks",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("type", sa.String(200), nullable=False),
    sa.Column("queue", sa.String(100), nullable=False),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("progress", sa.Float, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("meta", JSONType),
    sa.Column("params", JSONType),
    sa.Column("result", JSONType),
    sa.Column("error", JSONType),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("max_retries", sa.Integer, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("idempotency_key", sa.String(200)),
    sa.Column("executor", sa.String(16), nullable=False),
    sa.Column("worker", sa.String(200)),
    sa.Column("lease_expires_at", sa.Float),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("eta", sa.Float),
    sa.Column("expected_by", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("expires_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
)

events_table = sa.Table(
    "conveyor_task_events",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.String(36), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("progress", sa.Float, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
)


#: the events table's column names, in order (``event_from_row`` reads a row of them)
EVENT_COLUMNS = [c.name for c in events_table.columns]
assert EVENT_COLUMNS == ["seq", "task_id", "at", "kind", "state", "progress", "message"]


def event_from_row(row: Sequence[Any]) -> TaskEvent:
    """A timeline step from a row of ``EVENT_COLUMNS`` (SQLAlchemy's, psycopg's or sqlite3's)."""
    seq, task_id, at, kind, state, progress, message = row
    return TaskEvent(task_id, at, Status(state), progress, message, kind=kind, seq=seq)


#: the tasks table's column names, in order
COLUMNS = [c.name for c in tasks_table.columns]
# The table is the record: a field added to TaskRecord needs its column (and a migration).
assert set(COLUMNS) == set(RECORD_FIELDS), "conveyor_tasks and TaskRecord disagree"


def claim_statements() -> tuple[sa.Update, sa.Insert, sa.Select[Any]]:
    """start_run's statements, built once: the claim, its timeline step, and both in one for PostgreSQL."""
    t = tasks_table.c
    at = sa.bindparam("p_at", type_=sa.Float)
    runnable = sa.or_(
        t.state.in_([Status.PENDING.value, Status.RETRY.value]),
        sa.and_(t.state == Status.PROCESSING.value, t.lease_expires_at < at),
    )
    claim = (
        tasks_table.update()
        .where(t.id == sa.bindparam("p_task_id"), runnable)
        .values(
            state=Status.PROCESSING.value,
            worker=sa.bindparam("p_worker"),
            lease_expires_at=sa.bindparam("p_lease_until", type_=sa.Float),
            attempts=t.attempts + 1,
            started_at=at,
            updated_at=at,
            progress=0.0,
            message="Started",
            eta=None,
        )
        .returning(*tasks_table.c)
    )
    step_columns = ["task_id", "at", "kind", "state", "progress", "message"]
    fixed = [sa.literal("state"), sa.literal(Status.PROCESSING.value), sa.literal(0.0), sa.literal("Started")]
    step = events_table.insert().from_select(step_columns, sa.select(sa.bindparam("p_task_id"), at, *fixed))
    claimed = claim.cte("claimed")
    in_one = sa.select(claimed).add_cte(
        events_table.insert().from_select(step_columns, sa.select(claimed.c.id, at, *fixed)).cte("step")
    )
    return claim, step, in_one


#: SQLite connections kept open: the concurrency of an API process under load
SQLITE_POOL = 32


def create_engine_for(url: str, deadlines: Deadlines | None = None, **options: Any) -> Engine:
    """An engine with the settings each backend needs (WAL and busy timeout on SQLite) and ``deadlines``.

    ``options`` override the PostgreSQL pool's (``pool_size``, ``isolation_level``...);
    ``server_options`` adds ``-c name=value`` settings to every connection.
    """
    deadlines = deadlines or Deadlines()
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        busy_ms = int(deadlines.statement * 1000)
        # Pool as many connections as requests run at once (the API's worker threads): an overflow
        # connection is opened, set up with four PRAGMAs and closed again for every request past
        # the pool. Idle SQLite connections cost a file handle and a page cache each.
        # (An in-memory database has SQLAlchemy's one-connection-per-thread pool, which takes no size.)
        pooled = bool(path) and path != ":memory:"
        sizes: dict[str, Any] = (
            {"pool_size": SQLITE_POOL, "max_overflow": 64, "pool_timeout": deadlines.pool} if pooled else {}
        )
        # Every connection is a SQLiteConnection, which a forked child does not share (fork_guard.py).
        connect = {"check_same_thread": False, "timeout": deadlines.statement, "factory": SQLiteConnection}
        engine = sa.create_engine(url, connect_args=connect, **sizes)

        # A connection checked out of the pool is in use: a fork waits for it (fork_guard.py). One that
        # is kept for good (the store's writer, its checkpointer) is detached and guarded by its owner.
        event.listen(engine, "checkout", lambda *_: IN_USE.enter())
        event.listen(engine, "checkin", lambda *_: IN_USE.leave())
        event.listen(engine, "detach", lambda *_: IN_USE.leave())

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives a process crash; only an OS crash
            # can lose the last transactions, the trade-off SQLite recommends.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            # Checkpoints (which fsync) run on the store's own thread, not
            # inside whichever commit crosses the threshold: see _checkpoints.
            cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        return engine
    server_options = options.pop("server_options", ())
    pool = {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20, "pool_recycle": 1800, **options}
    engine = sa.create_engine(
        url, pool_timeout=deadlines.pool, connect_args=pg_connect_args(deadlines, *server_options), **pool
    )
    if engine.dialect.driver == "psycopg":

        @event.listens_for(engine, "do_connect")
        def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
            return pg_connect(deadlines, cargs, cparams)

    return engine


#: Alembic's version table, named so it never clashes with an application's own history
VERSION_TABLE = "conveyor_alembic_version"
#: revisions an older Conveyor wrote that now live elsewhere: a workload's
#: tables were core revision 0002 before workloads had branches of their own
_MOVED_REVISIONS = {"0002": "0001"}


def upgrade(engine: Engine, revision: str = "head", *, migrations: Mapping[str, Path] | None = None) -> None:
    """Run the core's Alembic migrations, then each workload's in ``migrations`` (name → folder).

    Every workload keeps its own version table (``conveyor_<name>_alembic_version``),
    so a database serves any set of workloads: one that is not loaded today
    leaves its tables and its history alone, and a core upgrade never needs
    to know it.
    """
    from alembic import command
    from alembic.config import Config

    histories = [(VERSION_TABLE, MIGRATIONS / "versions")]
    histories += [(f"conveyor_{name}_alembic_version", folder) for name, folder in (migrations or {}).items()]
    # Two processes starting at once (an API and a worker on a fresh
    # database) must not both create the tables: one waits for the other.
    # A migration may rightly take long (or wait for another process's), so
    # it runs without the statement deadlines every other call has.
    with unbounded(), _sqlite_file_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SET LOCAL statement_timeout = 0"))
            conn.execute(sa.text("SET LOCAL lock_timeout = 0"))
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7243001)"))
        _restamp_moved(conn)
        for version_table, folder in histories:
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.set_main_option("path_separator", "os")
            cfg.set_main_option("version_locations", str(folder))
            cfg.attributes["connection"] = conn
            cfg.attributes["version_table"] = version_table
            command.upgrade(cfg, revision)


def _restamp_moved(conn: sa.Connection) -> None:
    """Point a version row at a revision that moved to where it now lives (see ``_MOVED_REVISIONS``)."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return
    table = sa.table(VERSION_TABLE, sa.column("version_num"))
    for old, new in _MOVED_REVISIONS.items():
        conn.execute(table.update().where(table.c.version_num == old).values(version_num=new))


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """An exclusive lock on ``<database>.migrate.lock`` beside a SQLite file (no-op elsewhere)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    import fcntl

    with open(f"{database}.migrate.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def record_from_row(row: sa.Row[Any]) -> TaskRecord:
    return TaskRecord.from_dict(row._mapping)


def row_from_record(r: TaskRecord) -> dict[str, Any]:
    return {name: (getattr(r, name).value if name == "state" else getattr(r, name)) for name in COLUMNS}
