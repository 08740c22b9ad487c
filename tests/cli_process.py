"""``conveyor worker|beat|flower|inspect`` as real subprocesses, for the tests of the Celery side."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import die_with_parent, empty_redis_db

REPO = Path(__file__).resolve().parents[1]
#: the Redis database these tests own (the broker of every process they start)
OPS_REDIS_DB = 9


def ops_redis_url() -> str:
    """Redis database 9, emptied."""
    return empty_redis_db(OPS_REDIS_DB)


def ops_env(broker_url: str, database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a process that a user would start: only CONVEYOR_* settings, no FLOWER_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "FLOWER_"))}
    env.update(
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
        CONVEYOR_BROKER_URL=broker_url,
        CONVEYOR_DATABASE_URL=database_url,
        CONVEYOR_DATA_DIR=str(data_dir),
        CONVEYOR_LEASE_SECONDS="6",
        **extra,
    )
    return env


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class CliProcess:
    """One ``python -m conveyor <args>`` in a session of its own, logging to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, *, cwd: Path | None = None) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, ready: bytes | Callable[[], bool] | None = None, timeout: float = 60) -> CliProcess:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", *self.args],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        if ready is not None:
            check = (lambda: ready in self.log.read_bytes()) if isinstance(ready, bytes) else ready
            deadline = time.monotonic() + timeout
            while not check():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"conveyor {' '.join(self.args)} did not get ready:\n{self.tail()}")
                time.sleep(0.1)
        return self

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM (Celery's warm shutdown) and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """For teardown: a warm stop, then the whole group killed whatever happened."""
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            self.terminate(20)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # pool processes a dead parent left
        self.kill()


def run_cli(
    args: list[str], env: dict[str, str], *, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=die_with_parent,
    )


def inspect_json(args: list[str], env: dict[str, str], *, cwd: Path | None = None) -> tuple[int, dict[str, Any]]:
    done = run_cli(["inspect", *args, "--json"], env, cwd=cwd)
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError as e:
        raise AssertionError(f"conveyor inspect printed no JSON:\n{done.stdout}\n{done.stderr}") from e
