"""Fixtures shared by every tier.

Services are real: PostgreSQL, Redis and RabbitMQ on this machine. A test that
needs one that is down fails under CI (``CI=true``) and is skipped elsewhere,
with a message that says how to start it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from conveyor import Conveyor, Settings

PG_ADMIN_URL = os.environ.get("CONVEYOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS", "redis://127.0.0.1:6379")
RABBITMQ_URL = os.environ.get("CONVEYOR_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//")

HOW_TO_START = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Redis": "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no",
    "RabbitMQ": "rabbitmq-server -detached",
}


def die_with_parent() -> None:
    """``preexec_fn`` for servers and workers a test starts: SIGTERM when the test run dies.

    They run in sessions of their own (so a test can kill a whole group), which
    would otherwise outlive a killed test run and eat the next run's messages.
    """
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_redis() -> None:
    """The Redis the tests were pointed at (CONVEYOR_TEST_REDIS), wherever it listens."""
    url = urlsplit(REDIS_URL)
    require_service("Redis", url.hostname or "127.0.0.1", url.port or 6379)


def require_rabbitmq() -> None:
    url = urlsplit(RABBITMQ_URL)
    require_service("RabbitMQ", url.hostname or "127.0.0.1", url.port or 5672)


def require_service(name: str, host: str, port: int) -> None:
    if _port_open(host, port):
        return
    message = f"{name} is not running on {host}:{port}; start it with: {HOW_TO_START[name]}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import sqlalchemy as sa

    name = f"conveyor_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _truncate_postgres(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        tables = (
            conn.execute(
                sa.text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename NOT LIKE 'conveyor%alembic_version'"
                )
            )
            .scalars()
            .all()
        )
        if tables:
            conn.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY"))
    engine.dispose()


@pytest.fixture
def clean_postgres_url(postgres_url: str) -> str:
    """The session's PostgreSQL database, migrated and with every Conveyor table empty."""
    from conveyor.stores.sql import SqlStore

    store = SqlStore(Settings(database_url=postgres_url).resolved_database_url)
    store.open()
    store.close()
    _truncate_postgres(postgres_url)
    return postgres_url


def empty_redis_db(db: int) -> str:
    """The URL of local Redis database ``db``, emptied first."""
    require_redis()
    import redis

    url = f"{REDIS_URL}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture
def clean_redis_url() -> str:
    """Redis database 14, emptied: the Redis-only store of one test."""
    return empty_redis_db(14)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes this runs on SQLite, on PostgreSQL and on the Redis-only store."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'conveyor.db'}"
    if request.param == "redis":
        redis_url: str = request.getfixturevalue("clean_redis_url")
        return redis_url
    url: str = request.getfixturevalue("clean_postgres_url")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite, then PostgreSQL: for workloads whose own tables live in SQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'conveyor.db'}"
    url: str = request.getfixturevalue("clean_postgres_url")
    return url


AppFactory = Callable[..., Conveyor]


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[AppFactory]:
    """Build and start Conveyor apps; every one is stopped after the test."""
    apps: list[Conveyor] = []

    def factory(
        *,
        start: bool = True,
        run_executor: bool = True,
        workload_settings: dict[str, dict[str, Any]] | None = None,
        **overrides: Any,
    ) -> Conveyor:
        overrides.setdefault("data_dir", tmp_path / f"data{len(apps)}")
        overrides.setdefault("concurrency", 2)
        overrides.setdefault("lease_seconds", 5.0)
        overrides.setdefault("shutdown_timeout", 5.0)
        app = Conveyor(Settings(**overrides), workload_settings=workload_settings)
        apps.append(app)
        if start:
            app.start(executor=run_executor)
        return app

    yield factory
    for app in reversed(apps):
        app.stop(graceful=False)


#: prints the queues a Conveyor with the default workloads declares (the Celery app's, a worker's without -Q)
KNOWN_QUEUES = """
import json, tempfile
from conveyor import Conveyor, Settings
print(json.dumps(sorted(Conveyor(Settings(data_dir=tempfile.mkdtemp())).manager.declared_queues())))
"""


def known_queues(**run: Any) -> list[str]:
    """``KNOWN_QUEUES`` in a fresh interpreter: loading the workloads here would register their types in this one."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", KNOWN_QUEUES], capture_output=True, text=True, check=True, **run)
    queues: list[str] = json.loads(out.stdout)
    return queues


class CeleryWorkers:
    """Celery worker subprocesses (``celery -A conveyor.worker``), one per broker and store, kept for the session."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: dict[tuple[str, str], Any] = {}

    def env(self, broker_url: str, database_url: str, workloads: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env.update(
            PYTHONPATH=str(Path(__file__).resolve().parents[1]),
            CONVEYOR_EXECUTOR="celery",
            CONVEYOR_BROKER_URL=broker_url,
            CONVEYOR_DATABASE_URL=database_url,
            CONVEYOR_LEASE_SECONDS="6",
            CONVEYOR_DATA_DIR=str(self.base / "worker-data"),
        )
        if workloads is not None:
            env["CONVEYOR_WORKLOADS"] = workloads
        return env

    def start(
        self,
        broker_url: str,
        database_url: str,
        *,
        concurrency: int = 2,
        name: str = "w1",
        workloads: str | None = None,
        queues: str = "default,documents,media,cpu,gpu,logs,maintenance",
    ) -> Any:
        import subprocess
        import sys
        import time

        key = (broker_url, database_url + name)
        if key in self.procs and self.procs[key].poll() is None:
            return self.procs[key]
        # Workers on one broker share its queues: one serving another store
        # would take (and drop) this store's messages.
        for (other_broker, other), proc in list(self.procs.items()):
            if other_broker == broker_url and other != database_url + name:
                self.stop(proc)
                del self.procs[(other_broker, other)]
        log_path = self.base / f"worker-{len(self.procs)}.log"
        with open(log_path, "wb") as log:  # the worker keeps its own copy of the handle
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "conveyor.worker",
                    "worker",
                    "-P",
                    "prefork",
                    "-c",
                    str(concurrency),
                    "-Q",
                    queues,
                    "-n",
                    f"{name}-{uuid.uuid4().hex[:6]}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "-l",
                    "INFO",
                ],
                env=self.env(broker_url, database_url, workloads),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + 60
        while b"ready." not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log_path.read_text()[-3000:])
            time.sleep(0.1)
        self.procs[key] = proc
        return proc

    def stop(self, proc: Any) -> None:
        import signal

        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except Exception:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def stop_all(self) -> None:
        import signal

        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except Exception:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                # Reaped, or its Popen warns "still running" when collected, in whichever test runs then.
                proc.wait(5)


@pytest.fixture(scope="session")
def celery_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryWorkers]:
    workers = CeleryWorkers(tmp_path_factory.mktemp("celery"))
    yield workers
    workers.stop_all()


@pytest.fixture
def private_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryWorkers]:
    """Celery workers of one test only: it may kill them without disturbing the session's."""
    pool = CeleryWorkers(tmp_path_factory.mktemp("workers"))
    yield pool
    pool.stop_all()


BROKERS = {"redis": f"{REDIS_URL}/12", "amqp": RABBITMQ_URL}


def broker_url(name: str) -> str:
    if name == "redis":
        require_redis()
    else:
        require_rabbitmq()
    return BROKERS[name]
