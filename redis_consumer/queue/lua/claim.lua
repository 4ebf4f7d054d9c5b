-- Claim one job in one atomic step: take the oldest waiting key (or the key BLMOVE already moved
-- into our processing list), mark it started with a fresh fencing token, count the attempt and
-- return its fields (saves a round trip). A job whose attempts are already used up (it kept
-- killing workers that handed it back without the reaper) is dead-lettered here instead of run.
-- KEYS[1] queue             {queue}; read only when ARGV[5] is empty
-- KEYS[2] processing list   processing-{queue}:{consumer_id}
-- KEYS[3] dead list         dead-{queue}
-- ARGV[1] token             fresh fencing token of this claim
-- ARGV[2] consumer_id
-- ARGV[3] now               ISO-8601 UTC
-- ARGV[4] max_attempts
-- ARGV[5] job key           '' = LMOVE the oldest key from KEYS[1] (RIGHT -> LEFT) first
-- ARGV[6] dead reason       written on a job dead-lettered here
-- ARGV[7] expire_seconds    TTL of a dead-lettered job
-- Reply: {outcome, previous_status, attempts, fields (flat HGETALL, only for ok), key}
--   outcome: ok | empty | missing | wrongtype | final | dead
--#include child_ended.lua
local job = ARGV[5]
if job == '' then
  job = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not job then return {'empty', '', 0, {}, ''} end
end
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
local attempts = redis.pcall('HINCRBY', job, 'attempts', 1)
if type(attempts) ~= 'number' or attempts < 1 then
  -- `attempts` is the worker's field; a producer's garbage there (text, 2.5, -7) counts as none
  redis.call('HSET', job, 'attempts', 1)
  attempts = 1
end
-- the fan-in counters are the broker's: a producer's non-integer value there would make every
-- script that counts children fail on this job, so it is dropped (the broker writes integers)
local counters = redis.call('HMGET', job, 'children_total', 'children_done', 'children_failed')
for i, name in ipairs({'children_total', 'children_done', 'children_failed'}) do
  if counters[i] and not string.match(counters[i], '^%d+$') then redis.call('HDEL', job, name) end
end
if attempts > tonumber(ARGV[4]) then
  -- used up before this claim (workers died on it and handed it back without the reaper)
  redis.call('HINCRBY', job, 'attempts', -1)
  redis.call('LREM', KEYS[2], 1, job)
  redis.call('HDEL', job, 'claim')
  redis.call('HSET', job, 'status', 'failed', 'failure_type', 'system', 'reason', ARGV[6],
    'updated_at', ARGV[3], 'finished_at', ARGV[3])
  redis.call('EXPIRE', job, tonumber(ARGV[7]))
  redis.call('LPUSH', KEYS[3], job)
  child_ended(job, 'children_failed', ARGV[3])
  return {'dead', status, attempts - 1, {}, job}
end
redis.call('HSET', job, 'status', 'started', 'claim', ARGV[1], 'updated_by', ARGV[2],
  'identity_started', ARGV[2], 'started_at', ARGV[3], 'updated_at', ARGV[3])
return {'ok', status, attempts, redis.call('HGETALL', job), job}
