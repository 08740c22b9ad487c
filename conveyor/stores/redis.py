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
* ``idem:{tenant}:{key}`` the id an idempotency key names
* ``fin`` / ``fin:{tenant}`` sorted sets of ``state|id|time`` by finish time, kept
                          for a day: what the throughput counts read

Every change that depends on a task's current state (the "only while
unfinished" rule, cancel, retry) runs as one Lua script, so it is atomic.
Finished records get ``EXPIREAT`` their ``expires_at``; unfinished ones never
expire. Ids left in listing sets by an expired record are dropped when met.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from conveyor.errors import MissingExtra, StoreError
from conveyor.records import FINAL_STATES, UNFINISHED_STATES, Status, TaskEvent, TaskRecord
from conveyor.stores.base import Change, DuplicateTask, Page, QueueStats, TaskQuery, Throughput, throughput_from_counts

__all__ = ["RedisStore"]

_FIELDS = [
    "id",
    "type",
    "queue",
    "tenant",
    "state",
    "progress",
    "message",
    "meta",
    "params",
    "result",
    "error",
    "attempts",
    "max_retries",
    "priority",
    "idempotency_key",
    "executor",
    "worker",
    "lease_expires_at",
    "cancel_requested",
    "eta",
    "created_at",
    "started_at",
    "finished_at",
    "expires_at",
    "updated_at",
]

#: how long the throughput sets keep a finish: the longest window the stats ask for
FIN_KEEP = 86_400

_COMMON = f"""
local P = ARGV[1]
local FIN_KEEP = {FIN_KEEP}
local function final(s) return s == 'SUCCESS' or s == 'FAILURE' or s == 'CANCELLED' end
local function dec(v) if v == false or v == nil then return nil end local x = cjson.decode(v)
  if x == cjson.null then return nil end return x end
-- Note a finish in the throughput sets, dropping what is older than they keep.
local function finished(id, key, tenant, state)
  local at = dec(redis.call('HGET', key, 'finished_at')) or dec(redis.call('HGET', key, 'updated_at'))
  if not at then return end
  local member = state..'|'..id..'|'..tostring(at)
  for _, k in ipairs({{P..'fin', P..'fin:'..tenant}}) do
    redis.call('ZADD', k, at, member)
    redis.call('ZREMRANGEBYSCORE', k, '-inf', '('..tostring(at - FIN_KEEP))
  end
end
-- Move a task between state sets and keep the counters and holder sets true.
local function transition(id, key, cur_state, new_state, expires, worker)
  local queue = dec(redis.call('HGET', key, 'queue'))
  local tenant = dec(redis.call('HGET', key, 'tenant'))
  local created = dec(redis.call('HGET', key, 'created_at'))
  redis.call('ZREM', P..'q:'..queue..':'..cur_state, id)
  if final(new_state) then
    if not final(cur_state) then finished(id, key, tenant, new_state) end
    local score = '+inf'
    if expires then score = expires end
    redis.call('ZADD', P..'q:'..queue..':'..new_state, score, id)
    if not final(cur_state) then redis.call('DECR', P..'unfinished:'..tenant) end
    if worker then redis.call('SREM', P..'held:'..worker, id) end
    if expires then
      redis.call('EXPIREAT', key, math.ceil(expires))
      redis.call('EXPIREAT', P..'ev:'..id, math.ceil(expires))
    end
  else
    redis.call('ZADD', P..'q:'..queue..':'..new_state, created, id)
    if final(cur_state) then
      redis.call('INCR', P..'unfinished:'..tenant)
      redis.call('PERSIST', key)
      redis.call('PERSIST', P..'ev:'..id)
    end
  end
end
local function push_events(id, first, last)
  for j = first, last do
    local seq = redis.call('INCR', P..'seq')
    redis.call('RPUSH', P..'ev:'..id, seq..'|'..ARGV[j])
  end
end
"""

# ARGV: prefix, id, allowed ("" = any unfinished, else comma list), nfields, f1, v1, ..., events...
_APPLY = (
    _COMMON
    + """
local id = ARGV[2]
local key = P..'t:'..id
local cur = dec(redis.call('HGET', key, 'state'))
if not cur then return 0 end
local allowed = ARGV[3]
if allowed == '' then
  if final(cur) then return 0 end
elseif not string.find(','..allowed..',', ','..cur..',', 1, true) then
  return 0
end
local n = tonumber(ARGV[4])
local new_state, new_worker, worker_set, expires = nil, nil, false, nil
local hs = {}
for k = 0, n - 1 do
  local f, v = ARGV[5 + 2*k], ARGV[6 + 2*k]
  hs[#hs+1] = f
  hs[#hs+1] = v
  if f == 'state' then new_state = cjson.decode(v) end
  if f == 'worker' then worker_set = true; new_worker = dec(v) end
  if f == 'expires_at' then expires = dec(v) end
end
local old_worker = dec(redis.call('HGET', key, 'worker'))
if #hs > 0 then redis.call('HSET', key, unpack(hs)) end
push_events(id, 5 + 2*n, #ARGV)
if worker_set and old_worker ~= new_worker then
  if old_worker then redis.call('SREM', P..'held:'..old_worker, id) end
  if new_worker then
    redis.call('SADD', P..'held:'..new_worker, id)
    redis.call('SADD', P..'workers', new_worker)
  end
end
local holder = old_worker
if worker_set then holder = new_worker end
if new_state and new_state ~= cur then transition(id, key, cur, new_state, expires, holder) end
if new_state and not final(new_state) and holder then
  redis.call('SADD', P..'held:'..holder, id)
  redis.call('SADD', P..'workers', holder)
end
return 1
"""
)

# ARGV: prefix, id, tenant, idempotency key or "", created_at, queue, state, worker or "", expires or "",
#       nfields, f1, v1...
_INSERT = (
    _COMMON
    + """
local id, tenant, idem = ARGV[2], ARGV[3], ARGV[4]
if idem ~= '' then
  if redis.call('SET', P..'idem:'..tenant..':'..idem, id, 'NX') == false then return 0 end
end
local key = P..'t:'..id
local n = tonumber(ARGV[10])
local hs = {}
for k = 0, n - 1 do hs[#hs+1] = ARGV[11 + 2*k]; hs[#hs+1] = ARGV[12 + 2*k] end
redis.call('HSET', key, unpack(hs))
local created, queue, state, worker = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
redis.call('ZADD', P..'tenant:'..tenant, created, id)
redis.call('ZADD', P..'all', created, id)
redis.call('SADD', P..'queues', queue)
if final(state) then
  finished(id, key, tenant, state)
  local expires = ARGV[9]
  if expires == '' then expires = '+inf' else redis.call('EXPIREAT', key, math.ceil(tonumber(expires))) end
  redis.call('ZADD', P..'q:'..queue..':'..state, expires, id)
else
  redis.call('ZADD', P..'q:'..queue..':'..state, created, id)
  redis.call('INCR', P..'unfinished:'..tenant)
  if worker ~= '' then
    redis.call('SADD', P..'held:'..worker, id)
    redis.call('SADD', P..'workers', worker)
  end
end
return 1
"""
)

# ARGV: prefix, id, worker, lease_until, at, event json
_START_RUN = (
    _COMMON
    + """
local id = ARGV[2]
local key = P..'t:'..id
local cur = dec(redis.call('HGET', key, 'state'))
if not cur then return 0 end
local at = tonumber(ARGV[5])
if cur == 'PROCESSING' then
  local lease = dec(redis.call('HGET', key, 'lease_expires_at'))
  if lease and lease >= at then return 0 end
elseif cur ~= 'PENDING' and cur ~= 'RETRY' then
  return 0
end
local old_worker = dec(redis.call('HGET', key, 'worker'))
if old_worker then redis.call('SREM', P..'held:'..old_worker, id) end
local attempts = dec(redis.call('HGET', key, 'attempts')) or 0
redis.call('HSET', key, 'state', '"PROCESSING"', 'worker', cjson.encode(ARGV[3]), 'lease_expires_at', ARGV[4],
  'attempts', tostring(attempts + 1), 'started_at', ARGV[5], 'updated_at', ARGV[5], 'progress', '0.0',
  'message', '"Started"', 'eta', 'null')
redis.call('SADD', P..'held:'..ARGV[3], id)
redis.call('SADD', P..'workers', ARGV[3])
if cur ~= 'PROCESSING' then transition(id, key, cur, 'PROCESSING', nil, ARGV[3]) end
push_events(id, 6, 6)
return 1
"""
)

# ARGV: prefix, id
_REQUEST_CANCEL = (
    _COMMON
    + """
local key = P..'t:'..ARGV[2]
local cur = dec(redis.call('HGET', key, 'state'))
if not cur or final(cur) then return 0 end
redis.call('HSET', key, 'cancel_requested', 'true')
return 1
"""
)

# ARGV: prefix, key of the set to read, since, bucket seconds. Counts per bucket and state
# inside Redis, so only the counts cross the wire: {bucket start, state, count, ...}.
_THROUGHPUT = """
local rows = redis.call('ZRANGEBYSCORE', ARGV[1]..ARGV[2], ARGV[3], '+inf', 'WITHSCORES')
local size = tonumber(ARGV[4])
local counts, order = {}, {}
for i = 1, #rows, 2 do
  local state = string.match(rows[i], '^([^|]+)|')
  local bucket = math.floor(tonumber(rows[i + 1]) / size) * size
  local k = bucket..'|'..state
  if not counts[k] then counts[k] = 0; order[#order + 1] = {bucket, state, k} end
  counts[k] = counts[k] + 1
end
local out = {}
for _, o in ipairs(order) do
  out[#out + 1] = tostring(o[1]); out[#out + 1] = o[2]; out[#out + 1] = counts[o[3]]
end
return out
"""


def _enc(value: Any) -> str:
    if isinstance(value, Status):
        return json.dumps(value.value)
    return json.dumps(value, separators=(",", ":"))


def _record(raw: dict[bytes, bytes]) -> TaskRecord:
    data = {k.decode(): json.loads(v) for k, v in raw.items()}
    return TaskRecord.from_dict(data)


def _event_json(e: TaskEvent) -> str:
    return json.dumps([e.task_id, e.at, e.kind, e.state.value, e.progress, e.message])


class RedisStore:
    kind = "redis"
    engine = None

    def after_fork(self) -> None:
        """redis-py's pool notices a new process id and opens its own connections."""

    def __init__(self, url: str, *, default_ttl: float = 3600.0, prefix: str = "conveyor:") -> None:
        try:
            import redis
        except ImportError as e:  # pragma: no cover - the extra is installed in dev
            raise MissingExtra("redis", "redis") from e
        self._redis_mod = redis
        self.url = url
        self.prefix = prefix
        self.default_ttl = default_ttl
        self.r = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
        self._apply = self.r.register_script(_APPLY)
        self._insert = self.r.register_script(_INSERT)
        self._request_cancel = self.r.register_script(_REQUEST_CANCEL)
        self._start_run = self.r.register_script(_START_RUN)
        self._throughput = self.r.register_script(_THROUGHPUT)

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (self._redis_mod.ConnectionError, self._redis_mod.TimeoutError) as e:
            raise StoreError(f"redis unavailable: {e}") from e

    # -- lifecycle ----------------------------------------------------------

    def open(self) -> None:
        self.ping()

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
                len(_FIELDS),
            ]
            for name in _FIELDS:
                args += [name, _enc(getattr(r, name))]
            self._insert(args=args, client=pipe)
        results = self._call(pipe.execute)
        if any(res == 0 for res in results):
            raise DuplicateTask("idempotency key already used")

    def get(self, task_id: str) -> TaskRecord | None:
        raw = self._call(self.r.hgetall, self._k("t", task_id))
        return _record(raw) if raw else None

    def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        pipe = self.r.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hgetall(self._k("t", task_id))
        return [_record(raw) for raw in self._call(pipe.execute) if raw]

    def find_by_idempotency_key(self, tenant: str, key: str) -> TaskRecord | None:
        task_id = self._call(self.r.get, self._k("idem", tenant, key))
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
        # With filters every candidate is read: fine for the short-lived data this store keeps.
        matched: list[TaskRecord] = []
        start = 0
        while True:
            ids = [i.decode() for i in self._call(rangefn, index, start, start + 499)]
            if not ids:
                break
            for r in self._existing(index, ids):
                if _matches(r, query):
                    matched.append(r)
            start += 500
        return Page(matched[query.offset : query.offset + query.limit], len(matched))

    def _existing(self, index: str, ids: list[str]) -> list[TaskRecord]:
        """The records behind ``ids``; ids whose record has expired are removed from ``index``."""
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for task_id in ids:
            pipe.hgetall(self._k("t", task_id))
        raws = self._call(pipe.execute)
        gone = [task_id for task_id, raw in zip(ids, raws, strict=True) if not raw]
        if gone:
            self._call(self.r.zrem, index, *gone)
        return [_record(raw) for raw in raws if raw]

    # -- changes --------------------------------------------------------------

    def _apply_args(self, change: Change, allowed: str = "") -> list[Any]:
        args: list[Any] = [self.prefix, change.task_id, allowed, len(change.fields)]
        for name, value in change.fields.items():
            args += [name, _enc(value)]
        args += [_event_json(e) for e in change.events]
        return args

    def apply(self, changes: Sequence[Change]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for change in changes:
            self._apply(args=self._apply_args(change), client=pipe)
        self._call(pipe.execute)

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

    def reset(self, task_id: str, fields: dict[str, Any], from_states: Sequence[Status]) -> TaskRecord | None:
        allowed = ",".join(Status(s).value for s in from_states)
        done = self._call(self._apply, args=self._apply_args(Change(task_id, dict(fields)), allowed))
        return self.get(task_id) if done else None

    def claim(self, task_ids: Sequence[str], worker: str, lease_until: float) -> list[TaskRecord]:
        pipe = self.r.pipeline(transaction=False)
        for task_id in task_ids:
            change = Change(task_id, {"worker": worker, "lease_expires_at": lease_until})
            self._apply(args=self._apply_args(change), client=pipe)
        results = self._call(pipe.execute)
        return self.get_many([i for i, ok in zip(task_ids, results, strict=True) if ok])

    def start_run(self, task_id: str, worker: str, lease_until: float, at: float) -> TaskRecord | None:
        event = _event_json(TaskEvent(task_id, at, Status.PROCESSING, 0.0, "Started", kind="state"))
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
                pipe = self.r.pipeline(transaction=False)
                for task_id in ids:
                    pipe.unlink(self._k("t", task_id), self._k("ev", task_id))
                pipe.zrem(key, *ids)
                pipe.zrem(self._k("all"), *ids)
                self._call(pipe.execute)
                deleted += len(ids)
        return deleted

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


def _matches(r: TaskRecord, q: TaskQuery) -> bool:
    return (
        (not q.states or r.state in q.states)
        and (not q.types or r.type in q.types)
        and (not q.queues or r.queue in q.queues)
        and (not q.id_prefix or r.id.startswith(q.id_prefix))
    )
