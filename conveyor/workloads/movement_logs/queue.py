"""The log queue: a Redis list (seed 003's ``movement_logs``) or a table in the SQL database.

Producers append JSON items; a batch takes up to M of them. Both backends
keep an item until the SQL write that stores it has committed:

- **Redis** (reliable-queue pattern): one Lua script moves the oldest items
  from the list to a processing list of the batch's own
  (``<name>:processing:<batch id>``) and records the batch with a lease
  deadline in ``<name>:batches``. The batch deletes its processing list only
  after its transaction commits. A batch whose worker died leaves its list
  behind; once its lease has passed, the next batch takes the list over
  whole (a RENAME inside the same script) and writes it again: the event id
  primary key makes that second write add only what the first did not.
- **SQL**: ``DELETE ... RETURNING`` of the oldest rows and the insert of the
  logs run in one transaction, so a crash rolls both back.

Item text is the same on both: ``{"event_id", "tenant", "user_id",
"track_id", "bbox", "state", "store", "timestamp", "received_at"}``. Lists
named in a script but not in its KEYS keep this a single-instance Redis
design (not Redis Cluster).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa

from conveyor.workloads.movement_logs.tables import queue_table

if TYPE_CHECKING:
    import redis

__all__ = ["Claim", "LogQueue", "QueueUnavailable", "RedisLogQueue", "SqlLogQueue"]


class QueueUnavailable(Exception):
    """The queue's backend cannot be reached; the message says which and why."""


@dataclass(frozen=True)
class Claim:
    """Items one batch took from the queue."""

    batch_id: str
    items: list[str]
    #: True when these are a dead worker's items, taken over after its lease passed
    recovered: bool = False


class LogQueue(Protocol):
    kind: str
    name: str

    def push(self, items: Sequence[str], enqueued_at: float) -> int: ...

    def length(self) -> int: ...

    def oldest_enqueued_at(self) -> float | None: ...

    def processing(self) -> int: ...

    def dead_letters(self) -> int: ...

    def clear(self) -> int: ...

    def ping(self) -> None: ...


# KEYS: the list, the batches zset. ARGV: processing-list prefix, batch id, max items, lease seconds.
# A stale batch (lease passed) is taken over before any fresh item is moved.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local deadline = now + tonumber(ARGV[4])
local mine = ARGV[1] .. ARGV[2]
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1)
if #stale > 0 then
  redis.call('ZREM', KEYS[2], stale[1])
  local old = ARGV[1] .. stale[1]
  if redis.call('EXISTS', old) == 1 then
    redis.call('RENAME', old, mine)
    redis.call('ZADD', KEYS[2], deadline, ARGV[2])
    return {1, redis.call('LRANGE', mine, 0, -1)}
  end
end
local items = redis.call('RPOP', KEYS[1], tonumber(ARGV[3]))
if not items then
  return {0, {}}
end
for i = 1, #items, 1000 do
  redis.call('RPUSH', mine, unpack(items, i, math.min(i + 999, #items)))
end
redis.call('ZADD', KEYS[2], deadline, ARGV[2])
return {0, items}
"""

# KEYS: the batches zset. ARGV: batch id, lease seconds. Only a batch still registered is renewed.
_RENEW = """
local t = redis.call('TIME')
return redis.call('ZADD', KEYS[1], 'XX', 'CH', tonumber(t[1]) + tonumber(ARGV[2]), ARGV[1])
"""

# KEYS: the list. Returns how many items were dropped.
_CLEAR = """
local n = redis.call('LLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return n
"""


class RedisLogQueue:
    """The Redis list ``name`` and its processing lists."""

    kind = "redis"

    def __init__(self, url: str, name: str = "movement_logs", *, lease_seconds: float = 60.0) -> None:
        import redis

        self.url = url
        self.name = name
        self.lease_seconds = lease_seconds
        self.batches_key = f"{name}:batches"
        self.processing_prefix = f"{name}:processing:"
        self.dead_key = f"{name}:dead"
        self.client: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
        self._claim = self.client.register_script(_CLAIM)
        self._renew = self.client.register_script(_RENEW)
        self._clear = self.client.register_script(_CLEAR)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        import redis

        try:
            yield
        except redis.RedisError as e:
            raise QueueUnavailable(f"Redis at {_safe(self.url)}: {e}") from e

    def push(self, items: Sequence[str], enqueued_at: float) -> int:
        """LPUSH every item in one command (all or none); returns the new length."""
        if not items:
            return self.length()
        with self._errors():
            return int(self.client.lpush(self.name, *items))

    def length(self) -> int:
        with self._errors():
            return int(self.client.llen(self.name))

    def oldest_enqueued_at(self) -> float | None:
        with self._errors():
            raw = self.client.lindex(self.name, -1)
        return _received_at(raw) if raw is not None else None

    def processing(self) -> int:
        with self._errors():
            ids = self.client.zrange(self.batches_key, 0, -1)
            if not ids:
                return 0
            pipe = self.client.pipeline(transaction=False)
            for batch_id in ids:
                name = batch_id.decode() if isinstance(batch_id, bytes) else str(batch_id)
                pipe.llen(self.processing_prefix + name)
            return sum(int(n) for n in pipe.execute())

    def dead_letters(self) -> int:
        with self._errors():
            return int(self.client.llen(self.dead_key))

    def clear(self) -> int:
        with self._errors():
            return int(self._clear(keys=[self.name]))

    def ping(self) -> None:
        with self._errors():
            self.client.ping()

    def claim(self, batch_id: str, max_items: int) -> Claim:
        with self._errors():
            recovered, items = self._claim(
                keys=[self.name, self.batches_key],
                args=[self.processing_prefix, batch_id, max_items, self.lease_seconds],
            )
        return Claim(batch_id, [i.decode() if isinstance(i, bytes) else i for i in items], bool(recovered))

    def renew(self, batch_id: str) -> None:
        with self._errors():
            self._renew(keys=[self.batches_key], args=[batch_id, self.lease_seconds])

    def ack(self, batch_id: str) -> None:
        """Forget a batch whose rows have committed."""
        with self._errors():
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.processing_prefix + batch_id)
            pipe.zrem(self.batches_key, batch_id)
            pipe.execute()

    def bury(self, items: Sequence[str]) -> None:
        """Items that are not movement logs (pushed by hand) go to ``<name>:dead`` for a person to read."""
        if items:
            with self._errors():
                self.client.lpush(self.dead_key, *items)

    def close(self) -> None:
        self.client.close()


class SqlLogQueue:
    """The ``movement_logs_queue`` table: the queue of the embedded default (no Redis)."""

    kind = "sql"

    def __init__(self, engine: sa.Engine, name: str = "movement_logs") -> None:
        self.engine = engine
        self.name = name

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sa.exc.OperationalError as e:
            raise QueueUnavailable(f"the queue table: {str(e.orig)[:300]}") from e

    def push(self, items: Sequence[str], enqueued_at: float) -> int:
        """Insert every item in one transaction (all or none); returns the new length."""
        rows = [{"event_id": _event_id_of(i), "payload": i, "enqueued_at": enqueued_at} for i in items]
        with self._errors(), self.engine.begin() as conn:
            if rows:
                conn.execute(queue_table.insert(), rows)
            return int(conn.execute(sa.select(sa.func.count()).select_from(queue_table)).scalar_one())

    def length(self) -> int:
        with self._errors(), self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(queue_table)).scalar_one())

    def oldest_enqueued_at(self) -> float | None:
        with self._errors(), self.engine.connect() as conn:
            value = conn.execute(sa.select(sa.func.min(queue_table.c.enqueued_at))).scalar_one()
        return float(value) if value is not None else None

    def processing(self) -> int:
        # Items leave the table in the same transaction that stores them: none is ever half-way.
        return 0

    def dead_letters(self) -> int:
        return 0

    def clear(self) -> int:
        with self._errors(), self.engine.begin() as conn:
            return int(conn.execute(queue_table.delete()).rowcount)

    def ping(self) -> None:
        with self._errors(), self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def take(self, conn: sa.Connection, max_items: int) -> list[str]:
        """Delete and return the oldest ``max_items`` items inside the caller's transaction.

        On PostgreSQL the rows are locked with SKIP LOCKED, so two batches at
        once take different items; SQLite has one writer at a time anyway.
        """
        q = queue_table.c
        oldest = sa.select(q.seq).order_by(q.seq).limit(max_items)
        if conn.dialect.name == "postgresql":
            oldest = oldest.with_for_update(skip_locked=True)
        rows = conn.execute(
            queue_table.delete().where(q.seq.in_(oldest.scalar_subquery())).returning(q.seq, q.payload)
        ).all()
        return [r[1] for r in sorted(rows, key=lambda r: int(r[0]))]


def _event_id_of(item: str) -> str:
    try:
        value = json.loads(item).get("event_id")
    except (ValueError, AttributeError):
        return ""
    return str(value)[:64] if value else ""


def _received_at(raw: bytes | str) -> float | None:
    try:
        value: Any = json.loads(raw).get("received_at")
        return float(value) if value is not None else None
    except (ValueError, AttributeError, TypeError):
        return None


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
