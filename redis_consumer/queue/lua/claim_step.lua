-- The body of claim.lua as a function, so that finish_claim.lua can run both in one script.
-- claim_step(KEYS, ARGV): the KEYS/ARGV documented in claim.lua; returns its reply.
--#include child_ended.lua
local function claim_step(KEYS, ARGV)
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
end
