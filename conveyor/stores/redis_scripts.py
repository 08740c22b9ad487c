"""The Redis store's Lua scripts and encoding: one JSON value per record field, one script per atomic change.

Every change that depends on a task's current state runs as one of these
scripts, so it is atomic; ``redis.py`` registers them and calls them.
"""

from __future__ import annotations

import json
from typing import Any

from conveyor.records import RECORD_FIELDS, Status, TaskEvent, TaskRecord

__all__ = [
    "APPLY",
    "FIELDS",
    "FIN_KEEP",
    "INDEX",
    "INSERT",
    "REQUEST_CANCEL",
    "START_RUN",
    "THROUGHPUT",
    "encode",
    "escape_tenant",
    "event_json",
    "record_from_hash",
]

#: the hash fields of a record: every TaskRecord field
FIELDS = list(RECORD_FIELDS)

#: how long the throughput sets keep a finish: the longest window the stats ask for
FIN_KEEP = 86_400

COMMON = f"""
local P = ARGV[1]
local FIN_KEEP = {FIN_KEEP}
local function final(s) return s == 'SUCCESS' or s == 'FAILURE' or s == 'CANCELLED' end
-- A tenant's name inside a key: ':' and '%' escaped, so "a:b" and "a" never share a key (escape_tenant).
local function esc(s)
  return (string.gsub(s, '[%%:]', function(c) if c == '%' then return '%25' end return '%3A' end))
end
-- The listing indexes of one task's state, for its tenant and for all tenants (ids scored by creation time).
local function index_state(id, tenant, old_state, new_state, created)
  for _, ix in ipairs({{P..'ix:'..esc(tenant)..':s:', P..'ixall:s:'}}) do
    if old_state then redis.call('ZREM', ix..old_state, id) end
    redis.call('ZADD', ix..new_state, created, id)
  end
end
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
-- The key of the task's idempotency key while it still names this task (nil: none). It expires
-- with the record: a key kept for ever would name an id that is gone, and refuse every new task.
local function idem_key(key, tenant, id)
  local idem = dec(redis.call('HGET', key, 'idempotency_key'))
  if not idem then return nil end
  local k = P..'idem:'..esc(tenant)..':'..idem
  if redis.call('GET', k) ~= id then return nil end
  return k
end
-- Move a task between state sets and keep the counters and holder sets true.
local function transition(id, key, cur_state, new_state, expires, worker)
  local queue = dec(redis.call('HGET', key, 'queue'))
  local tenant = dec(redis.call('HGET', key, 'tenant'))
  local created = dec(redis.call('HGET', key, 'created_at'))
  redis.call('ZREM', P..'q:'..queue..':'..cur_state, id)
  index_state(id, tenant, cur_state, new_state, redis.call('HGET', key, 'created_at'))
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
      local idem = idem_key(key, tenant, id)
      if idem then redis.call('EXPIREAT', idem, math.ceil(expires)) end
    end
  else
    redis.call('ZADD', P..'q:'..queue..':'..new_state, created, id)
    if final(cur_state) then
      redis.call('INCR', P..'unfinished:'..tenant)
      redis.call('PERSIST', key)
      redis.call('PERSIST', P..'ev:'..id)
      local idem = idem_key(key, tenant, id)
      if idem then redis.call('PERSIST', idem) end
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
APPLY = (
    COMMON
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
INSERT = (
    COMMON
    + """
local id, tenant, idem = ARGV[2], ARGV[3], ARGV[4]
if idem ~= '' then
  if redis.call('SET', P..'idem:'..esc(tenant)..':'..idem, id, 'NX') == false then return 0 end
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
index_state(id, tenant, nil, state, created)
local task_type = dec(redis.call('HGET', key, 'type'))
for _, ix in ipairs({P..'ix:'..esc(tenant)..':', P..'ixall:'}) do
  redis.call('ZADD', ix..'ty:'..task_type, created, id)
  redis.call('ZADD', ix..'q:'..queue, created, id)
end
if final(state) then
  finished(id, key, tenant, state)
  local expires = ARGV[9]
  if expires == '' then expires = '+inf' else
    redis.call('EXPIREAT', key, math.ceil(tonumber(expires)))
    if idem ~= '' then redis.call('EXPIREAT', P..'idem:'..esc(tenant)..':'..idem, math.ceil(tonumber(expires))) end
  end
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

# ARGV: prefix, ids... Adds existing records to the listing indexes (records written before they existed).
INDEX = (
    COMMON
    + """
for j = 2, #ARGV do
  local id = ARGV[j]
  local key = P..'t:'..id
  local state = dec(redis.call('HGET', key, 'state'))
  if state then
    local tenant = dec(redis.call('HGET', key, 'tenant'))
    local created = redis.call('HGET', key, 'created_at')
    local task_type = dec(redis.call('HGET', key, 'type'))
    local queue = dec(redis.call('HGET', key, 'queue'))
    index_state(id, tenant, nil, state, created)
    for _, ix in ipairs({P..'ix:'..esc(tenant)..':', P..'ixall:'}) do
      redis.call('ZADD', ix..'ty:'..task_type, created, id)
      redis.call('ZADD', ix..'q:'..queue, created, id)
    end
  end
end
return 1
"""
)

# ARGV: prefix, id, worker, lease_until, at, event json
START_RUN = (
    COMMON
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
REQUEST_CANCEL = (
    COMMON
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
THROUGHPUT = """
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


def escape_tenant(tenant: str) -> str:
    """A tenant's name as a key part: ``%`` and ``:`` escaped, as the scripts' ``esc`` does."""
    return tenant.replace("%", "%25").replace(":", "%3A")


def encode(value: Any) -> str:
    if isinstance(value, Status):
        return json.dumps(value.value)
    return json.dumps(value, separators=(",", ":"))


def record_from_hash(raw: dict[bytes, bytes]) -> TaskRecord:
    data = {k.decode(): json.loads(v) for k, v in raw.items()}
    return TaskRecord.from_dict(data)


def event_json(e: TaskEvent) -> str:
    return json.dumps([e.task_id, e.at, e.kind, e.state.value, e.progress, e.message])
