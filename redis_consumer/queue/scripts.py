"""The Lua scripts of the job protocol: each one a single atomic step.

Every script that changes a claimed job first checks the job's `claim` fencing token, so a
worker that was presumed dead (a "zombie") can never overwrite the work of the claim that
replaced it. Liveness uses the Redis server clock (`TIME`), so clock skew between pods does not
matter. Job hashes are touched by key name from inside scripts (not declared in KEYS): fine on a
single Redis or Sentinel; Redis Cluster would need hash tags (see DESIGN.md).
"""

# KEYS: job, processing list, dead list
# ARGV: token, consumer_id, now_iso
# -> {outcome, previous_status, attempts, fields, key}; outcome in ok | missing | wrongtype | final
# (the job's fields come back with the claim to save a round trip)
_CLAIM_BODY = """
local t = redis.call('TYPE', job)['ok']
if t == 'none' then
  redis.call('LREM', KEYS[2], 1, job)
  return {'missing', '', 0, {}, job}
end
if t ~= 'hash' then
  redis.call('LREM', KEYS[2], 1, job)
  redis.call('LPUSH', KEYS[3], job)
  return {'wrongtype', t, 0, {}, job}
end
local status = redis.call('HGET', job, 'status') or ''
if status == 'done' or status == 'failed' then
  redis.call('LREM', KEYS[2], 1, job)
  return {'final', status, 0, {}, job}
end
local attempts = redis.call('HINCRBY', job, 'attempts', 1)
redis.call('HSET', job, 'status', 'started', 'claim', ARGV[1], 'updated_by', ARGV[2],
  'identity_started', ARGV[2], 'started_at', ARGV[3], 'updated_at', ARGV[3])
return {'ok', status, attempts, redis.call('HGETALL', job), job}
"""

CLAIM = "local job = KEYS[1]\n" + _CLAIM_BODY

# The busy-queue fast path: move the oldest key and claim it in ONE step (no BLMOVE round trip).
# KEYS: queue, processing list, dead list
# ARGV: token, consumer_id, now_iso
# -> {'empty'} or the same reply as CLAIM
CLAIM_NEXT = """
local job = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
if not job then return {'empty', '', 0, {}, ''} end
""" + _CLAIM_BODY

# KEYS: job
# ARGV: token, field1, value1, ...
# -> 1 written, 0 stale claim
UPDATE = """
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""

# Lua helper for zip fan-in, shared by every path that ends a child (finish, retries used up,
# reaper): the child's parent counts it as done or failed, and the last one to end puts the
# parent back on its queue. A dead-lettered child still counts, so a parent never waits forever.
_CHILD_ENDED = """
local function child_ended(k, field, now)
  local parent = redis.call('HGET', k, 'parent')
  local pq = redis.call('HGET', k, 'parent_queue')
  if not parent or not pq or parent == '' or pq == '' then return end
  redis.call('HINCRBY', parent, field, 1)
  local total = tonumber(redis.call('HGET', parent, 'children_total') or '-1')
  local ended = tonumber(redis.call('HGET', parent, 'children_done') or '0')
              + tonumber(redis.call('HGET', parent, 'children_failed') or '0')
  if total and total > 0 then
    redis.call('HSET', parent, 'progress', math.floor(100 * ended / total))
    if ended == total and redis.call('HGET', parent, 'status') == 'waiting' then
      redis.call('HSET', parent, 'queued_at', now)
      redis.call('RPUSH', pq, parent)
    end
  end
end
"""

# KEYS: job, processing list, stats counter, job log list
# ARGV: token, expire_seconds, final_status, log_cap, now_iso, n_field_args, field1, value1, ..., log lines...
# -> 1 finished, 0 stale claim, 2 already finished by this claim (idempotent replay)
FINISH = _CHILD_ENDED + """
local claim = redis.call('HGET', KEYS[1], 'claim')
if claim ~= ARGV[1] then
  redis.call('LREM', KEYS[2], 0, KEYS[1])
  return 0
end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'done' or status == 'failed' then
  redis.call('LREM', KEYS[2], 0, KEYS[1])
  return 2
end
local expire = tonumber(ARGV[2])
local nfields = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], 'status', ARGV[3], unpack(ARGV, 7, 6 + nfields))
redis.call('EXPIRE', KEYS[1], expire)
redis.call('LREM', KEYS[2], 0, KEYS[1])
redis.call('INCR', KEYS[3])
local cap = tonumber(ARGV[4])
if #ARGV > 6 + nfields and cap > 0 then
  redis.call('RPUSH', KEYS[4], unpack(ARGV, 7 + nfields))
  redis.call('LTRIM', KEYS[4], -cap, -1)
end
if cap > 0 and redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('EXPIRE', KEYS[4], expire)
end
if ARGV[3] == 'done' then
  child_ended(KEYS[1], 'children_done', ARGV[5])
else
  child_ended(KEYS[1], 'children_failed', ARGV[5])
end
return 1
"""

# Park a parent job until its children end (zip fan-out). If every child already ended,
# the parent goes straight back onto its queue, so no completion is ever missed.
# KEYS: job, processing list, queue
# ARGV: token, children_total, now_iso, field1, value1, ...
# -> 1 parked, 2 parked and requeued at once, 0 stale claim
PARK = """
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then
  redis.call('LREM', KEYS[2], 0, KEYS[1])
  return 0
end
local total = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'status', 'waiting', 'children_total', total, unpack(ARGV, 4))
redis.call('HDEL', KEYS[1], 'claim')
redis.call('LREM', KEYS[2], 0, KEYS[1])
local ended = tonumber(redis.call('HGET', KEYS[1], 'children_done') or '0')
            + tonumber(redis.call('HGET', KEYS[1], 'children_failed') or '0')
if ended >= total then
  redis.call('HSET', KEYS[1], 'queued_at', ARGV[3])
  redis.call('RPUSH', KEYS[3], KEYS[1])
  return 2
end
return 1
"""

# Give a claimed job back: `release` (shutdown: to the queue head, attempt not counted) or
# `retry` (system error: to the queue tail, or dead-lettered once attempts are used up).
# KEYS: job, processing list, queue, dead list
# ARGV: token, mode, max_attempts, now_iso, reason, expire_seconds
# -> 'released' | 'requeued' | 'dead' | 'stale' | 'final'
REQUEUE = _CHILD_ENDED + """
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then
  redis.call('LREM', KEYS[2], 0, KEYS[1])
  return 'stale'
end
local current = redis.call('HGET', KEYS[1], 'status')
if current == 'done' or current == 'failed' then
  redis.call('LREM', KEYS[2], 0, KEYS[1])
  return 'final'
end
redis.call('LREM', KEYS[2], 0, KEYS[1])
redis.call('HDEL', KEYS[1], 'claim')
if ARGV[2] == 'release' then
  redis.call('HINCRBY', KEYS[1], 'attempts', -1)
  redis.call('HSET', KEYS[1], 'status', 'new', 'updated_at', ARGV[4], 'queued_at', ARGV[4])
  redis.call('RPUSH', KEYS[3], KEYS[1])
  return 'released'
end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if attempts >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'failure_type', 'system', 'reason', ARGV[5],
    'updated_at', ARGV[4], 'finished_at', ARGV[4])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
  redis.call('LPUSH', KEYS[4], KEYS[1])
  child_ended(KEYS[1], 'children_failed', ARGV[4])
  return 'dead'
end
redis.call('HSET', KEYS[1], 'status', 'new', 'last_error', ARGV[5], 'updated_at', ARGV[4], 'queued_at', ARGV[4])
redis.call('LPUSH', KEYS[3], KEYS[1])
return 'requeued'
"""

# Return every key in a processing list to the queue head without touching attempts
# (used for a worker's own list after a lost BLMOVE reply, and on clean shutdown).
# KEYS: processing list, queue
# -> number of keys moved
RELEASE_ALL = """
local n = 0
while true do
  local k = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not k then break end
  n = n + 1
end
return n
"""

# Heartbeat: score = server time + ttl; also registers the queue name for discovery.
# KEYS: consumers zset, queues set
# ARGV: consumer_id, ttl_seconds, queue
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('SADD', KEYS[2], ARGV[3])
return tostring(now)
"""

# Reaper: return the jobs of every consumer whose heartbeat expired to the queue head
# (oldest first), dead-letter those that used up their attempts, forget the consumer.
# KEYS: consumers zset, queue, dead list
# ARGV: processing prefix, max_attempts, now_iso, reason, expire_seconds
# -> {recovered, dead_lettered, consumers_reaped}
REAP = _CHILD_ENDED + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. tostring(now))
local recovered, dead = 0, 0
for _, id in ipairs(gone) do
  local plist = ARGV[1] .. id
  local items = redis.call('LRANGE', plist, 0, -1)
  for i = 1, #items do
    local k = items[i]
    if redis.call('TYPE', k)['ok'] == 'hash' then
      local status = redis.call('HGET', k, 'status') or ''
      if status ~= 'done' and status ~= 'failed' then
        local attempts = tonumber(redis.call('HGET', k, 'attempts') or '0')
        redis.call('HDEL', k, 'claim')
        if attempts >= tonumber(ARGV[2]) then
          redis.call('HSET', k, 'status', 'failed', 'failure_type', 'system', 'reason', ARGV[4],
            'updated_at', ARGV[3], 'finished_at', ARGV[3])
          redis.call('EXPIRE', k, tonumber(ARGV[5]))
          redis.call('LPUSH', KEYS[3], k)
          child_ended(k, 'children_failed', ARGV[3])
          dead = dead + 1
        else
          redis.call('HSET', k, 'status', 'new', 'updated_at', ARGV[3], 'queued_at', ARGV[3],
            'last_error', 'its worker stopped responding; requeued')
          redis.call('RPUSH', KEYS[2], k)
          recovered = recovered + 1
        end
      end
    end
  end
  redis.call('DEL', plist)
  redis.call('ZREM', KEYS[1], id)
end
return {recovered, dead, #gone}
"""
