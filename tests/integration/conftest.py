"""Fixtures of the operations tests (conveyor worker, beat, inspect, Flower)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.cli_process import CliProcess, ops_redis_url


@pytest.fixture
def broker() -> Iterator[str]:
    """The operations tests' Redis database; emptied afterwards."""
    url = ops_redis_url()
    yield url
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


@pytest.fixture
def processes() -> Iterator[list[CliProcess]]:
    """Every CLI process a test starts; all stopped (and their groups killed) afterwards."""
    started: list[CliProcess] = []
    yield started
    for p in reversed(started):
        p.stop()
