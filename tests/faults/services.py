"""Private Redis, PostgreSQL and RabbitMQ servers that a fault test may stop, kill and start at will.

The shared services on their usual ports are never stopped by a test; these
run on ports of their own, in a temporary folder, and are gone at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import broker_url, require_rabbitmq


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, *, up: bool, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                is_up = True
        except OSError:
            is_up = False
        if is_up == up:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} still {'down' if up else 'up'} after {timeout}s")
        time.sleep(0.05)


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed; the fault tests run private servers with it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


class PrivateRedis:
    """``redis-server`` with an append-only file, so a restart keeps what was written (as production must)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        binary = _need("redis-server")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                *(binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder), "--save", ""),
                *("--appendonly", "yes", "--appendfsync", "always", "--logfile", str(self.folder / "redis.log")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port, up=True)
        return self

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): the append-only file is complete."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        wait_port(self.port, up=False)


class PrivatePostgres:
    """A PostgreSQL cluster of its own (``initdb`` + ``pg_ctl``), run as the ``postgres`` user when we are root."""

    def __init__(self) -> None:
        # Not under pytest's temporary folder: its parents are closed to the postgres user.
        self.folder = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> PrivatePostgres:
        initdb = _need("initdb")
        _need("pg_ctl")
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "pg.log"), "-w", "start")
        wait_port(self.port, up=True)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        wait_port(self.port, up=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _rabbitmq_script(name: str) -> str:
    """RabbitMQ's own script, not Debian's /usr/sbin wrapper: that one switches to the rabbitmq user
    (another home, another Erlang cookie) and drops the environment that names a private node."""
    script = Path("/usr/lib/rabbitmq/bin") / name
    return str(script) if script.exists() else _need(name)


class PrivateRabbitMQ:
    """A ``rabbitmq-server`` node of its own (its own name, ports and data folder), no plugins.

    Its queues are durable and Celery's messages persistent, so a restart from
    the same folder, even after a SIGKILL, finds every message it confirmed.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.node = f"conveyor-fault-{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.process: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq"),
            "RABBITMQ_PID_FILE": str(self.folder / "pid"),
        }

    def start(self, timeout: float = 90) -> PrivateRabbitMQ:
        binary = _rabbitmq_script("rabbitmq-server")
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "enabled_plugins").write_text("[].\n")
        (self.folder / "rabbitmq.conf").write_text("")
        with open(self.folder / "server.out", "ab") as out:
            self.process = subprocess.Popen(
                [binary], env=self._env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not self._accepts_amqp():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = (self.folder / "server.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"rabbitmq-server on port {self.port} did not start: {tail}")
            time.sleep(0.2)
        return self

    def _accepts_amqp(self) -> bool:
        """The port opens before the broker serves; a connection that completes its handshake means it does."""
        import kombu

        try:
            with kombu.Connection(self.url, connect_timeout=1) as conn:
                conn.connect()
                return True
        except Exception:
            return False

    def ctl(self, *args: str) -> None:
        binary = _rabbitmq_script("rabbitmqctl")
        subprocess.run([binary, "-n", self.node, *args], env=self._env(), check=True, capture_output=True, timeout=60)

    def kill(self) -> None:
        """SIGKILL of the whole node (the Erlang VM and its helpers), as a crash or the OOM killer would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        wait_port(self.port, up=False)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        wait_port(self.port, up=False)


def rabbitmq_vhost(name: str) -> str:
    """A new, empty RabbitMQ virtual host: workers of other tests cannot take its messages."""
    require_rabbitmq()
    ctl = _need("rabbitmqctl")
    subprocess.run([ctl, "delete_vhost", name], capture_output=True, timeout=60)  # and every queue in it
    subprocess.run([ctl, "add_vhost", name], check=True, capture_output=True, timeout=60)
    subprocess.run(
        [ctl, "set_permissions", "-p", name, "guest", ".*", ".*", ".*"], check=True, capture_output=True, timeout=60
    )
    return f"amqp://guest:guest@127.0.0.1:5672/{name}"


def fresh_broker(kind: str, name: str, redis_db: int) -> str:
    """An empty broker namespace of a test's own: a new RabbitMQ vhost, or a flushed Redis database.

    The session's Celery workers (other tests) consume the shared ones, and
    would take, and drop, messages meant for this test's store.
    """
    if kind == "amqp":
        return rabbitmq_vhost(name)
    import redis

    url = broker_url("redis").rsplit("/", 1)[0] + f"/{redis_db}"
    redis.Redis.from_url(url).flushdb()
    return url
