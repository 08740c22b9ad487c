"""The Redis-only store (seed 004's "no SQL" mode): records in Redis, finished ones expiring.

Layout, under a key prefix (``conveyor:`` by default):

* ``t:{id}``              hash: one JSON-encoded value per record field
* ``ev:{id}``             list: the task's timeline, ``"<seq>|<json>"`` per step
* ``tenant:{tenant}``     sorted set of ids by creation time (listing)
* ``all``                 sorted set of every id by creation time
* ``q:{queue}:{state}``   sorted set of ids per queue and state; for finished
                          states the score is the expiry time, so the purge
                          removes expired ids with one range delete
* ``queues``              set of queue names seen
* ``unfinished:{tenant}`` counter of PENDING/PROCESSING/RETRY tasks
* ``held:{worker}``       set of unfinished ids a worker holds; ``workers`` names them
* ``idem:{tenant}:{key}`` the id an idempotency key names; here and in the
                          ``ix:`` keys the tenant's ``%`` and ``:`` are escaped
                          (``%25``, ``%3A``), so tenants "a:b" and "a" never share a key
* ``ix:{tenant}:s:{state}``, ``ix:{tenant}:ty:{type}``, ``ix:{tenant}:q:{queue}``
                          sorted sets of ids by creation time: what a filtered
                          list intersects, so it reads only its page's records;
                          ``ixall:...`` the same across tenants
* ``fin`` / ``fin:{tenant}`` sorted sets of ``state|id|time`` by finish time, kept
                          for a day: what the throughput counts read

Every change that depends on a task's current state (the "only while
unfinished" rule, cancel, retry) runs as one Lua script, so it is atomic.
Finished records get ``EXPIREAT`` their ``expires_at``; unfinished ones never
expire. Ids left in listing sets by an expired record are dropped when met.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import anyio.to_thread

from conveyor.errors import MissingExtra, StoreError, outage_reason
from conveyor.records import FINAL_STATES, UNFINISHED_STATES, Status, TaskEvent, TaskRecord, now
from conveyor.stores.base import Change, DuplicateTask, Page, QueueStats, TaskQuery, Throughput, throughput_from_counts
from conveyor.stores.deadlines import Deadlines
from conveyor.stores.redis_scripts import (
    APPLY,
    FIELDS,
    INDEX,
    INSERT,
    REQUEST_CANCEL,
    START_RUN,
    THROUGHPUT,
    encode,
    escape_tenant,
    event_json,
    record_from_hash,
)

__all__ = ["RedisStore"]


class RedisStore:
    kind = "redis"
    engine = None

    def after_fork(self) -> None:
        """redis-py's pool notices a new process id and opens its own connections."""

    def __init__(
        self, url: str, *, default_ttl: float = 3600.0, prefix: str = "conveyor:", deadlines: Deadlines | None = None
    ) -> None:
        try:
            import redis
        except ImportError as e:  # pragma: no cover - the extra is installed in dev
            raise MissingExtra("redis", "redis") from e
        self._redis_mod = redis
        self.url = url
        self.prefix = prefix
        self.default_ttl = default_ttl
        self.deadlines = deadlines or Deadlines()
        # A hung server answers nothing: every command has the statement deadline.
        self.r = redis.Redis.from_url(
            url,
            socket_timeout=self.deadlines.statement,
            socket_connect_timeout=self.deadlines.connect,
            health_check_interval=30,
        )
        self._apply = self.r.register_script(APPLY)
        self._insert = self.r.register_script(INSERT)
        self._index = self.r.register_script(INDEX)
        self._request_cancel = self.r.register_script(REQUEST_CANCEL)
        self._start_run = self.r.register_script(START_RUN)
        self._throughput = self.r.register_script(THROUGHPUT)

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (self._redis_mod.ConnectionError, self._redis_mod.TimeoutError) as e:
            raise StoreError(f"redis unavailable: {outage_reason(e)}") from e

    # -- lifecycle ----------------------------------------------------------

    def open(self) -> None:
        self.ping()
        self._ensure_indexes()

    def _ensure_indexes(self) -> None:
        """Index the records written before the ``ix:`` sets existed, once per database.

        Each batch is one script, so a change running meanwhile lands wholly
        before or after it; two processes doing this at once only repeat work.
        """
        marker = self._k("ix", "version")
        if self._call(self.r.exists, marker):
            return
        start = 0
        while True:
            ids = [i.decode() for i in self._call(self.r.zrange, self._k("all"), start, start + 499)]
            if not ids:
                break
            self._call(self._index, args=[self.prefix, *ids])
            start += 500
        self._call(self.r.set, marker, "1")

    def close(self) -> None:
        self.r.close()

    def ping(self) -> None:
        self._call(self.r.ping)

    # -- records ------------------------------------------------------------

    def insert(self, records: Sequence[TaskRecord]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for r in records:
            args: list[Any] = [
                self.prefix,
                r.id,
                r.tenant,
                r.idempotency_key or "",
                repr(r.created_at),
                r.queue,
                r.state.value,
                r.worker or "",
                "" if r.expires_at is None else repr(r.expires_at),
                len(FIELDS),
            ]
            for name in FIELDS:
                args += [name, encode(getattr(r, name))]
            self._insert(args=args, client=pipe)
        results = self._call(pipe.execute)
        if any(res == 0 for res in results):
            raise DuplicateTask("idempotency key already used")

    def get(self, task_id: str) -> TaskRecord | None:
        raw = self._call(self.r.hgetall, self._k("t", task_id))
        return record_from_hash(raw) if raw else None

    async def aget(self, task_id: str) -> TaskRecord | None:
        return await anyio.to_thread.run_sync(self.get, task_id)

    def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        pipe = self.r.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hgetall(self._k("t", task_id))
        return [record_from_hash(raw) for raw in self._call(pipe.execute) if raw]

    def find_by_idempotency_key(self, tenant: str, key: str) -> TaskRecord | None:
        task_id = self._call(self.r.get, self._k("idem", escape_tenant(tenant), key))
        return self.get(task_id.decode()) if task_id else None

    def query(self, query: TaskQuery) -> Page:
        index = self._k("tenant", query.tenant) if query.tenant is not None else self._k("all")
        filtered = bool(query.states or query.types or query.queues or query.id_prefix)
        rangefn = self.r.zrevrange if query.newest_first else self.r.zrange
        if not filtered:
            total = int(self._call(self.r.zcard, index))
            ids = [i.decode() for i in self._call(rangefn, index, query.offset, query.offset + query.limit - 1)]
            records = self._existing(index, ids)
            return Page(records, total - (len(ids) - len(records)))
        return self._filtered(index, query)

    def _filtered(self, index: str, query: TaskQuery) -> Page:
        """A filtered page from the index sets: Redis intersects the ids, and only the page's records are read."""
        ix = self._k("ix", escape_tenant(query.tenant), "") if query.tenant is not None else self._k("ixall", "")
        dims = [("s", [Status(s).value for s in query.states]), ("ty", list(query.types)), ("q", list(query.queues))]
        sources = {dim: [f"{ix}{dim}:{v}" for v in values] for dim, values in dims if values}
        tmp = self._k("tmp", uuid.uuid4().hex)
        parts = [f"{tmp}:{dim}" for dim in sources]
        pipe = self.r.pipeline(transaction=False)
        for part, keys in zip(parts, sources.values(), strict=True):
            pipe.zunionstore(part, keys, aggregate="MAX")
        # weight 0 for the filter sets: the score stays the creation time from the listing index
        pipe.zinterstore(tmp, {index: 1, **dict.fromkeys(parts, 0)})
        pipe.expire(tmp, 60)
        if parts:
            pipe.unlink(*parts)
        self._call(pipe.execute)
        try:
            if query.id_prefix:
                ids, total = self._prefixed(tmp, query)
            else:
                rangefn = self.r.zrevrange if query.newest_first else self.r.zrange
                total = int(self._call(self.r.zcard, tmp))
                ids = [i.decode() for i in self._call(rangefn, tmp, query.offset, query.offset + query.limit - 1)]
        finally:
            self._call(self.r.unlink, tmp)
        records = self._existing(index, ids, also=[k for keys in sources.values() for k in keys])
        return Page(records, total - (len(ids) - len(records)))

    def _prefixed(self, key: str, query: TaskQuery) -> tuple[list[str], int]:
        """The page of ids in ``key`` that start with the query's prefix (ids only cross the wire)."""
        prefix = query.id_prefix or ""
        pattern = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix) + "*"
        scanned = self._call(lambda: list(self.r.zscan_iter(key, match=pattern, count=1000)))
        found = [(score, i.decode()) for i, score in scanned]
        found.sort(reverse=query.newest_first)
        return [i for _, i in found[query.offset : query.offset + query.limit]], len(found)

    def _existing(self, index: str, ids: list[str], also: Sequence[str] = ()) -> list[TaskRecord]:
        """The records behind ``ids``; ids whose record has expired are removed from ``index`` (and ``also``)."""
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for task_id in ids:
            pipe.hgetall(self._k("t", task_id))
        raws = self._call(pipe.execute)
        gone = [task_id for task_id, raw in zip(ids, raws, strict=True) if not raw]
        if gone:
            pipe = self.r.pipeline(transaction=False)
            for key in (index, *also):
                pipe.zrem(key, *gone)
            self._call(pipe.execute)
        return [record_from_hash(raw) for raw in raws if raw]

    # -- changes --------------------------------------------------------------

    def _apply_args(self, change: Change, allowed: str = "") -> list[Any]:
        args: list[Any] = [self.prefix, change.task_id, allowed, len(change.fields)]
        for name, value in change.fields.items():
            args += [name, encode(value)]
        args += [event_json(e) for e in change.events]
        return args

    def apply(self, changes: Sequence[Change]) -> set[str]:
        pipe = self.r.pipeline(transaction=False)
        for change in changes:
            self._apply(args=self._apply_args(change), client=pipe)
        applied = self._call(pipe.execute)
        return {change.task_id for change, done in zip(changes, applied, strict=True) if done}

    async def aevents(self, task_id: str, after_seq: int = 0) -> list[TaskEvent]:
        return await anyio.to_thread.run_sync(self.events, task_id, after_seq)

    def events(self, task_id: str, after_seq: int = 0) -> list[TaskEvent]:
        out = []
        for raw in self._call(self.r.lrange, self._k("ev", task_id), 0, -1):
            seq_text, _, body = raw.decode().partition("|")
            seq = int(seq_text)
            if seq <= after_seq:
                continue
            tid, at, kind, state, progress, message = json.loads(body)
            out.append(TaskEvent(tid, at, Status(state), progress, message, kind=kind, seq=seq))
        return out

    def cancel_waiting(self, task_id: str, at: float) -> TaskRecord | None:
        current = self.get(task_id)
        if current is None:
            return None
        expires = at + self.default_ttl if self.default_ttl > 0 else None
        change = Change(
            task_id,
            {
                "state": Status.CANCELLED,
                "finished_at": at,
                "updated_at": at,
                "message": "Cancelled",
                "expires_at": expires,
            },
            [TaskEvent(task_id, at, Status.CANCELLED, current.progress, "Cancelled", kind="state")],
        )
        done = self._call(self._apply, args=self._apply_args(change, "PENDING,RETRY"))
        return self.get(task_id) if done else None

    def request_cancel(self, task_id: str) -> bool:
        return bool(self._call(self._request_cancel, args=[self.prefix, task_id]))

    def reset(
        self,
        task_id: str,
        fields: dict[str, Any],
        from_states: Sequence[Status],
        event: TaskEvent | None = None,
    ) -> TaskRecord | None:
        allowed = ",".join(Status(s).value for s in from_states)
        change = Change(task_id, dict(fields), [event] if event is not None else [])
        done = self._call(self._apply, args=self._apply_args(change, allowed))
        return self.get(task_id) if done else None

    def claim(
        self,
        task_ids: Sequence[str],
        worker: str,
        lease_until: float,
        *,
        at: float | None = None,
        dead_workers: Sequence[str] = (),
    ) -> list[TaskRecord]:
        at = now() if at is None else at
        dead = set(dead_workers)
        got = [i for i in task_ids if self._call(self._claim_one, i, worker, lease_until, at, dead)]
        return self.get_many(got)

    def _claim_one(self, task_id: str, worker: str, lease_until: float, at: float, dead: set[str]) -> bool:
        """Take one task if its holder is still gone; a record changed meanwhile (another claimer) is left."""
        key = self._k("t", task_id)
        with self.r.pipeline() as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                raw_worker, raw_lease = pipe.hmget(key, ["worker", "lease_expires_at"])
                holder = json.loads(raw_worker) if raw_worker else None
                lease = json.loads(raw_lease) if raw_lease else None
                if not (lease is None or lease < at or holder in dead):
                    return False
                pipe.multi()
                change = Change(task_id, {"worker": worker, "lease_expires_at": lease_until})
                self._apply(args=self._apply_args(change), client=pipe)
                return bool(pipe.execute()[0])
            except self._redis_mod.WatchError:
                return False

    def start_run(self, task_id: str, worker: str, lease_until: float, at: float) -> TaskRecord | None:
        event = event_json(TaskEvent(task_id, at, Status.PROCESSING, 0.0, "Started", kind="state"))
        ok = self._call(self._start_run, args=[self.prefix, task_id, worker, repr(lease_until), repr(at), event])
        return self.get(task_id) if ok else None

    def renew_leases(self, worker: str, until: float) -> int:
        ids = [i.decode() for i in self._call(self.r.smembers, self._k("held", worker))]
        if ids:
            self.apply([Change(i, {"lease_expires_at": until}) for i in ids])
        return len(ids)

    def recoverable(
        self,
        executor: str,
        at: float,
        dead_workers: Sequence[str] = (),
        limit: int = 1000,
        states: Sequence[Status] = (),
    ) -> list[TaskRecord]:
        dead = set(dead_workers)
        found: list[TaskRecord] = []
        for queue in self._queues():
            for state in states or UNFINISHED_STATES:
                ids = [i.decode() for i in self._call(self.r.zrange, self._k("q", queue, Status(state).value), 0, -1)]
                for r in self.get_many(ids):
                    if (
                        r.executor == executor
                        and r.state in UNFINISHED_STATES
                        and (r.worker in dead or (r.lease_expires_at or 0) < at)
                    ):
                        found.append(r)
        found.sort(key=lambda r: r.created_at)
        return found[:limit]

    def overdue(self, executor: str, at: float, limit: int = 1000) -> list[TaskRecord]:
        # Two fields of each PENDING task are read, then the whole records of the overdue ones.
        due: list[tuple[float, str]] = []
        for queue in self._queues():
            ids = [i.decode() for i in self._call(self.r.zrange, self._k("q", queue, Status.PENDING.value), 0, -1)]
            pipe = self.r.pipeline(transaction=False)
            for task_id in ids:
                pipe.hmget(self._k("t", task_id), "executor", "expected_by")
            for task_id, (owner, deadline) in zip(ids, self._call(pipe.execute), strict=True):
                expected = json.loads(deadline) if deadline else None
                if owner is not None and json.loads(owner) == executor and expected is not None and expected < at:
                    due.append((expected, task_id))
        due.sort()
        return [r for r in self.get_many([i for _, i in due[:limit]]) if r.state is Status.PENDING]

    def count_unfinished(self, tenant: str) -> int:
        n = self._call(self.r.get, self._k("unfinished", tenant))
        return int(n) if n else 0

    def _queues(self) -> list[str]:
        return sorted(q.decode() for q in self._call(self.r.smembers, self._k("queues")))

    def queue_stats(self, at: float | None = None) -> list[QueueStats]:
        import time

        now = time.time() if at is None else at
        queues = self._queues()
        pipe = self.r.pipeline(transaction=False)
        for queue in queues:
            for state in Status:
                key = self._k("q", queue, state.value)
                if state in FINAL_STATES:
                    pipe.zcount(key, f"({now}", "+inf")  # not yet expired
                else:
                    pipe.zcard(key)
        counts = iter(self._call(pipe.execute))
        stats = []
        for queue in queues:
            per = {state.value: int(next(counts)) for state in Status}
            stats.append(QueueStats(queue, {s: n for s, n in per.items() if n}))
        return [s for s in stats if s.counts]

    def throughput(self, tenant: str | None, since: float, bucket_seconds: int) -> list[Throughput]:
        size = max(1, int(bucket_seconds))
        key = "fin" if tenant is None else f"fin:{tenant}"
        flat = self._call(self._throughput, args=[self.prefix, key, repr(float(since)), size])
        counts: dict[float, dict[str, int]] = {}
        for i in range(0, len(flat), 3):
            start, state, n = float(flat[i]), flat[i + 1].decode(), int(flat[i + 2])
            counts.setdefault(start, {})[state] = n
        return throughput_from_counts(counts)

    def purge_expired(self, at: float, limit: int = 10_000) -> int:
        """Delete finished records whose expiry passed (Redis also expires them by itself)."""
        deleted = 0
        for queue in self._queues():
            for state in FINAL_STATES:
                key = self._k("q", queue, state.value)
                ids = [i.decode() for i in self._call(self.r.zrangebyscore, key, "-inf", at, 0, limit)]
                if not ids:
                    continue
                idem = self._idem_keys_of(ids)
                pipe = self.r.pipeline(transaction=False)
                for task_id in ids:
                    pipe.unlink(self._k("t", task_id), self._k("ev", task_id))
                if idem:
                    pipe.unlink(*idem)
                pipe.zrem(key, *ids)
                pipe.zrem(self._k("all"), *ids)
                self._call(pipe.execute)
                deleted += len(ids)
        return deleted

    def _idem_keys_of(self, task_ids: list[str]) -> list[str]:
        """The idempotency keys that still name these tasks: they go with their records (two round trips)."""
        pipe = self.r.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hmget(self._k("t", task_id), "tenant", "idempotency_key")
        named: dict[str, str] = {}
        for task_id, (tenant, idem) in zip(task_ids, self._call(pipe.execute), strict=True):
            key = json.loads(idem) if idem else None
            if key and tenant is not None:
                named[self._k("idem", escape_tenant(json.loads(tenant)), key)] = task_id
        if not named:
            return []
        holders = self._call(self.r.mget, list(named))
        return [name for (name, task_id), held in zip(named.items(), holders, strict=True) if held == task_id.encode()]

    def held_by(self, worker_prefix: str) -> list[str]:
        workers = sorted(w.decode() for w in self._call(self.r.smembers, self._k("workers")))
        held = []
        for w in workers:
            if w.startswith(worker_prefix):
                if self._call(self.r.scard, self._k("held", w)):
                    held.append(w)
                else:
                    self._call(self.r.srem, self._k("workers"), w)
        return held

    def flush(self) -> None:
        """Delete every key of this store (tests)."""
        cursor = 0
        while True:
            cursor, keys = self._call(self.r.scan, cursor, match=self.prefix + "*", count=1000)
            if keys:
                self._call(self.r.unlink, *keys)
            if cursor == 0:
                break
