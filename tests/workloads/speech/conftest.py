"""Fixtures of the speech tests: an app with the speech workload, flite audio, Celery workers on the speech lane.

Seed 002's tests are written for pytest-asyncio (``@pytest.mark.asyncio``);
this suite runs on anyio's plugin, so the hook below runs those coroutine
tests with ``asyncio.run`` and the seed's test bodies stay as it wrote them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conveyor import Conveyor
from conveyor.api.main import create_app
from tests.conftest import AppFactory, die_with_parent

ROOT = Path(__file__).resolve().parents[3]
ALPHA = {"Authorization": "Bearer ka"}
BETA = {"Authorization": "Bearer kb"}
OPERATOR = {"Authorization": "Bearer op"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "asyncio: a coroutine test written for pytest-asyncio (seed 002's tests)")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if pyfuncitem.get_closest_marker("asyncio") is None or not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**kwargs))
    return True


@pytest.fixture
def anyio_backend() -> str:
    """FastAPI runs on asyncio; so do these tests."""
    return "asyncio"


def need_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        message = (
            f"{', '.join(missing)} not installed (scripts/test installs them: apt-get install {' '.join(missing)})"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def flite_wav(text: str) -> bytes:
    from conveyor.workloads.speech.synth import synthesize_wav

    need_tools("flite")
    return synthesize_wav(text, engine="flite")


def as_chunks(data: bytes, size: int = 3000) -> list[str]:
    """Base64 pieces of one file, as a browser's recorder sends them (each piece encoded on its own)."""
    return [base64.b64encode(data[i : i + size]).decode() for i in range(0, len(data), size)]


def speech_app(make_app: AppFactory, database_url: str, **overrides: Any) -> Conveyor:
    overrides.setdefault("api_keys", "ka=alpha,kb=beta")
    overrides.setdefault("operator_keys", "op=ops")
    overrides.setdefault("workloads", ["system", "speech"])
    return make_app(start=False, database_url=database_url, **overrides)


@pytest.fixture
def speech(make_app: AppFactory, sql_database_url: str) -> Iterator[tuple[TestClient, Conveyor]]:
    """A client of an app with the speech workload, on SQLite then PostgreSQL."""
    app = speech_app(make_app, sql_database_url)
    with TestClient(create_app(app, scheduler=False)) as client:
        yield client, app


@pytest.fixture
def sqlite_speech(make_app: AppFactory, tmp_path: Path) -> Iterator[tuple[TestClient, Conveyor]]:
    """The same on SQLite only: for the tests whose subject is not the database."""
    app = speech_app(make_app, f"sqlite:///{tmp_path / 'speech.db'}")
    with TestClient(create_app(app, scheduler=False)) as client:
        yield client, app


def wait_task(client: TestClient, task_id: str, headers: dict[str, str] = ALPHA, timeout: float = 60) -> dict[str, Any]:
    """Poll seed 002's status route until the task has finished; returns the full record."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/api/tasks/{task_id}/status", headers=headers).json()
        if status["status"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            record: dict[str, Any] = client.get(f"/api/v1/tasks/{task_id}", headers=headers).json()
            return record
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def create_resource(client: TestClient, text: str, headers: dict[str, str] = ALPHA, **extra: Any) -> str:
    r = client.post("/api/resources", json={"title": text[:40], "reference_text": text, **extra}, headers=headers)
    assert r.status_code == 201, r.text
    resource_id: str = r.json()["id"]
    return resource_id


#: ports of this workload's private service instances (16700-16799 are the speech tests')
PRIVATE_REDIS_PORT = 16701


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server of these tests alone: no other suite's broker messages or FLUSHDB reach it."""
    need_tools("redis-server")
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(PRIVATE_REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, preexec_fn=die_with_parent,
    )  # fmt: skip
    import redis

    client = redis.Redis(port=PRIVATE_REDIS_PORT)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    # The server that answered is ours, not one another run left on the port.
    assert client.config_get("dir")["dir"] == str(folder), f"port {PRIVATE_REDIS_PORT} is taken by another Redis"
    client.close()
    try:
        yield f"redis://127.0.0.1:{PRIVATE_REDIS_PORT}"
    finally:
        proc.terminate()
        proc.wait(10)


def fresh_redis_db(base_url: str, db: int) -> str:
    import redis

    url = f"{base_url}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


class SpeechWorkers:
    """Celery worker subprocesses serving the speech lanes (the shared fixture's list has no ``speech``)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, broker_url: str, database_url: str, *, concurrency: int = 2, env: dict[str, str] | None = None
    ) -> Path:
        """One worker; ``env`` adds variables (the API's CONVEYOR_SPEECH_* must match the worker's)."""
        extra = env or {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env.update(extra)
        env.update(
            PYTHONPATH=str(ROOT),
            CONVEYOR_EXECUTOR="celery",
            CONVEYOR_BROKER_URL=broker_url,
            CONVEYOR_DATABASE_URL=database_url,
            CONVEYOR_WORKLOADS="system,speech",
            CONVEYOR_LEASE_SECONDS="6",
            CONVEYOR_DATA_DIR=str(self.base / "worker-data"),
        )
        log_path = self.base / f"worker-{len(self.procs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "conveyor.worker", "worker", "-P", "prefork",
                 "-c", str(concurrency), "-Q", "speech,default,maintenance",
                 "-n", f"speech-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle", "-l", "INFO"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
            )  # fmt: skip
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while b"ready." not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log_path.read_text()[-3000:])
            time.sleep(0.1)
        return log_path

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture
def speech_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpeechWorkers]:
    pool = SpeechWorkers(tmp_path_factory.mktemp("speech-workers"))
    yield pool
    pool.stop_all()
