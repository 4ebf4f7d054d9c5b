-- Claim one job in one atomic step: take the oldest waiting key (or the key BLMOVE already moved
-- into our processing list), mark it started with a fresh fencing token, count the attempt and
-- return its fields (saves a round trip). One HGETALL reads everything the step decides on (type,
-- status, attempts, fan-in counters) and one HSET writes the claim: 3 commands for a normal claim. A job whose attempts are already used up (it kept
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
-- Reply: {outcome, previous_status, attempts, fields (flat HGETALL, only for ok), key[, queue length (ok)]}
--   outcome: ok | empty | missing | wrongtype | final | dead
--#include child_ended.lua
local job = ARGV[5]
if job == '' then
  job = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not job then return {'empty', '', 0, {}, ''} end
end
local flat = redis.pcall('HGETALL', job)
if type(flat) ~= 'table' or flat.err then
  -- WRONGTYPE: the key holds something other than a hash
  local t = redis.call('TYPE', job)['ok']
  redis.call('LREM', KEYS[2], 1, job)
  redis.call('LPUSH', KEYS[3], job)
  return {'wrongtype', t, 0, {}, job}
end
if #flat == 0 then  -- a hash is never empty: the key does not exist
  redis.call('LREM', KEYS[2], 1, job)
  return {'missing', '', 0, {}, job}
end
local f = {}
for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
local status = f['status'] or ''
if status == 'done' or status == 'failed' then
  redis.call('LREM', KEYS[2], 1, job)
  return {'final', status, 0, {}, job}
end
-- `attempts` is the worker's field; counted as HINCRBY would, and a producer's garbage there
-- (text, 2.5, -7, leading zeros) counts as none
local raw = f['attempts']
local attempts = 1
if raw and (string.match(raw, '^%-?[1-9]%d*$') or raw == '0') then
  attempts = tonumber(raw) + 1
  if attempts < 1 then attempts = 1 end
end
-- the fan-in counters are the broker's: a producer's non-integer value there would make every
-- script that counts children fail on this job, so it is dropped (the broker writes integers)
local dropped = {}
for _, name in ipairs({'children_total', 'children_done', 'children_failed'}) do
  if f[name] and not string.match(f[name], '^%d+$') then
    redis.call('HDEL', job, name)
    dropped[name] = true
  end
end
if attempts > tonumber(ARGV[4]) then
  -- used up before this claim (workers died on it and handed it back without the reaper)
  redis.call('LREM', KEYS[2], 1, job)
  redis.call('HDEL', job, 'claim')
  redis.call('HSET', job, 'status', 'failed', 'failure_type', 'system', 'reason', ARGV[6],
    'updated_at', ARGV[3], 'finished_at', ARGV[3])
  redis.call('EXPIRE', job, tonumber(ARGV[7]))
  redis.call('LPUSH', KEYS[3], job)
  child_ended(job, 'children_failed', ARGV[3], {f['parent'], f['parent_queue']})
  return {'dead', status, attempts - 1, {}, job}
end
local set = {status = 'started', claim = ARGV[1], updated_by = ARGV[2], identity_started = ARGV[2],
  started_at = ARGV[3], updated_at = ARGV[3], attempts = tostring(attempts)}
redis.call('HSET', job, 'status', 'started', 'claim', ARGV[1], 'updated_by', ARGV[2],
  'identity_started', ARGV[2], 'started_at', ARGV[3], 'updated_at', ARGV[3], 'attempts', set.attempts)
-- the reply is the hash as it is now (what HGETALL would return after the HSET)
local out = {}
for i = 1, #flat, 2 do
  local name = flat[i]
  if not dropped[name] then
    out[#out + 1] = name
    out[#out + 1] = set[name] or flat[i + 1]
    set[name] = nil
  end
end
for _, name in ipairs({'status', 'claim', 'updated_by', 'identity_started', 'started_at', 'updated_at', 'attempts'}) do
  if set[name] then
    out[#out + 1] = name
    out[#out + 1] = set[name]
  end
end
-- the queue's length left behind: the broker blocks right away next time when it is 0
return {'ok', status, attempts, out, job, redis.call('LLEN', KEYS[1])}
