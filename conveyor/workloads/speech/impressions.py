"""Impression counters, and the sync that moves them into SQL exactly once.

Posting an impression is one counter increment: ``HINCRBY`` on a Redis hash
when ``CONVEYOR_SPEECH_REDIS_URL`` is set, otherwise one upsert into a
pending table of the SQL store (the embedded default, nothing else to run).

The Redis sync, and why no count is lost or doubled:

1. One Lua script renames the live hash to a fresh batch key and lists the
   batch in a set, atomically: later increments start a new live hash.
2. For each listed batch, its counts and the batch's id are written to SQL
   in one transaction; the id is a primary key, so a batch applied before
   (by a sync that died after committing, or by another sync at the same
   moment) is refused and adds nothing.
3. The batch key is deleted and unlisted (one MULTI).

A sync killed after 1 leaves a listed batch the next sync applies; killed
after 2, a listed batch whose id SQL already has, which the next sync only
deletes. The embedded counter needs none of this: taking the pending rows
(``DELETE ... RETURNING``) and adding them to the totals is one transaction.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa

from conveyor.workloads.speech import db

__all__ = ["ImpressionCounter", "RedisCounter", "SqlCounter", "SyncReport", "counter_for"]

#: batch ids older than this are forgotten; no batch waits in Redis this long (a sync runs every minute)
BATCH_MEMORY_SECONDS = 7 * 86400.0

_MOVE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('SADD', KEYS[3], KEYS[2])
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class SyncReport:
    #: impressions added to the SQL totals by this sync
    moved: int
    #: batches applied, and batches found already applied (left by a sync that died)
    batches: int = 0
    already_applied: int = 0
    backend: str = "sql"

    def to_dict(self) -> dict[str, Any]:
        return {
            "moved": self.moved,
            "batches": self.batches,
            "already_applied": self.already_applied,
            "backend": self.backend,
        }


class ImpressionCounter(Protocol):
    backend: str

    def add(self, resource_id: str, count: int = 1) -> None: ...

    def pending(self, resource_id: str) -> int: ...

    def sync(self) -> SyncReport: ...


class SqlCounter:
    backend = "sql"

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def add(self, resource_id: str, count: int = 1) -> None:
        db.add_pending_impressions(self.engine, resource_id, count)

    def pending(self, resource_id: str) -> int:
        return db.pending_impressions_of(self.engine, resource_id)

    def sync(self) -> SyncReport:
        return SyncReport(db.flush_pending_impressions(self.engine), backend=self.backend)


class RedisCounter:
    backend = "redis"

    def __init__(self, engine: sa.Engine, client: Any, prefix: str = "conveyor:speech:impressions") -> None:
        self.engine = engine
        self.client = client
        self.live = prefix
        self.batches = f"{prefix}:batches"
        self.batch_prefix = f"{prefix}:batch:"

    def add(self, resource_id: str, count: int = 1) -> None:
        self.client.hincrby(self.live, resource_id, count)

    def pending(self, resource_id: str) -> int:
        keys = [self.live, *sorted(k.decode() for k in self.client.smembers(self.batches))]
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, resource_id)
        return sum(int(v) for v in pipe.execute() if v is not None)

    def sync(self) -> SyncReport:
        self.client.eval(_MOVE, 3, self.live, f"{self.batch_prefix}{uuid.uuid4().hex}", self.batches)
        moved = applied = already = 0
        for raw_key in sorted(self.client.smembers(self.batches)):
            key = raw_key.decode()
            counts = {k.decode(): int(v) for k, v in self.client.hgetall(key).items()}
            if counts:
                if db.apply_impression_batch(self.engine, key, counts):
                    applied += 1
                    moved += sum(counts.values())
                else:
                    already += 1
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(key)
            pipe.srem(self.batches, key)
            pipe.execute()
        db.forget_impression_batches(self.engine, time.time() - BATCH_MEMORY_SECONDS)
        return SyncReport(moved, applied, already, self.backend)


_clients: dict[tuple[str, int], Any] = {}
_clients_lock = threading.Lock()


def _redis(url: str) -> Any:
    """One client per URL and process (a connection pool never crosses a fork)."""
    key = (url, os.getpid())
    with _clients_lock:
        if key not in _clients:
            import redis

            _clients[key] = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        return _clients[key]


def counter_for(engine: sa.Engine, redis_url: str) -> ImpressionCounter:
    """Redis counters when a Redis URL is configured, else the SQL store's."""
    if redis_url:
        return RedisCounter(engine, _redis(redis_url))
    return SqlCounter(engine)
