-- Give a claimed job back: mode `release` (shutdown, or TF Serving unreachable: to the queue
-- head, undoing the claim's HINCRBY of `attempts`, so the attempt is not counted)
-- or `retry` (system error: to the queue tail, or failed and dead-lettered once attempts are
-- used up; a dead-lettered zip child is counted by its parent).
-- KEYS[1] job hash
-- KEYS[2] processing list   processing-{queue}:{consumer_id}
-- KEYS[3] queue
-- KEYS[4] dead list         dead-{queue}
-- ARGV[1] token             our claim's fencing token
-- ARGV[2] mode              release | retry
-- ARGV[3] max_attempts
-- ARGV[4] now               ISO-8601 UTC
-- ARGV[5] reason            `last_error` on a requeue or a release ('' = none), `reason` when dead-lettered
-- ARGV[6] expire_seconds    TTL of a dead-lettered job
-- ARGV[7] status            (release, optional) the status it gets back: its status before the
--                           claim, for a job started in a batch and handed back unrun (default 'new')
-- Reply: released | requeued | dead | stale (another claim) | final (already ended) | vanished
--#include child_ended.lua
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then
  redis.call('LREM', KEYS[2], 0, KEYS[1])
  if redis.call('EXISTS', KEYS[1]) == 0 then return 'vanished' end
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
  local back = ARGV[7]
  if not back or back == '' then back = 'new' end
  redis.call('HSET', KEYS[1], 'status', back, 'updated_at', ARGV[4], 'queued_at', ARGV[4])
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'last_error', ARGV[5]) end
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
