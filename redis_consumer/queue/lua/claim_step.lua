-- The body of claim.lua as a function, so that finish_claim.lua can run it after a finish.
-- claim_step(K, A, k, a, with_len, held): claim.lua's KEYS are K[k+1..k+3], its ARGV A[a+1..a+7]
-- (offsets, so a combined script passes its own KEYS/ARGV without copying them); `with_len` adds
-- the queue length to an `ok` reply. `held`: the key is one this worker claimed ahead (it is
-- already in our processing list and its fields were sent then): it is started only if it is
-- still in our list (else `lost`: the reaper took it back while we were presumed dead), and the
-- reply carries no fields. `batch` (finish_batch.lua; nil otherwise): this start's place in a
-- batch of starts, 1 for the first. A job marked `claim_alone` (the reaper recovered it from a
-- batch) is started only as the first of its batch, and then alone (the reply's 7th element is 1:
-- start no more); as a later one it goes back to the oldest end of the queue (outcome `alone`).
-- So is a zip parent resuming its fan-in (status `waiting`). Any other job started in a batch gets
-- `claim_batch` = its token (see reap.lua).
-- Returns claim.lua's reply.
--#include child_ended.lua
-- `attempts` is the worker's field; counted as HINCRBY would, and a producer's garbage there
-- (text, 2.5, -7, leading zeros) counts as none: the attempts a claim now makes it
local function counted(raw)
  if raw and (string.match(raw, '^%-?[1-9]%d*$') or raw == '0') then
    local attempts = tonumber(raw) + 1
    if attempts < 1 then return 1 end
    return attempts
  end
  return 1
end

-- The fields a claim writes to the job it starts (claim_step and start_held alike).
-- `batched`: also mark it as started in a batch (`claim_batch` = the token).
local function mark_started(job, token, consumer, now, attempts, batched)
  if batched then
    redis.call('HSET', job, 'status', 'started', 'claim', token, 'updated_by', consumer,
      'identity_started', consumer, 'started_at', now, 'updated_at', now, 'attempts', attempts,
      'claim_batch', token)
    return
  end
  redis.call('HSET', job, 'status', 'started', 'claim', token, 'updated_by', consumer,
    'identity_started', consumer, 'started_at', now, 'updated_at', now, 'attempts', attempts)
end

local function claim_step(K, A, k, a, with_len, held, batch)
  local queue, plist, dead = K[k + 1], K[k + 2], K[k + 3]
  local token, consumer, now = A[a + 1], A[a + 2], A[a + 3]
  local job = A[a + 5]
  if job == '' then
    job = redis.call('LMOVE', queue, plist, 'RIGHT', 'LEFT')
    if not job then return {'empty', '', 0, {}, '', {}} end
  elseif held and not redis.call('LPOS', plist, job) then
    return {'lost', '', 0, {}, job, {}}
  end
  local flat = redis.pcall('HGETALL', job)
  if type(flat) ~= 'table' or flat.err then
    -- WRONGTYPE: the key holds something other than a hash
    local t = redis.call('TYPE', job)['ok']
    redis.call('LREM', plist, 1, job)
    redis.call('LPUSH', dead, job)
    return {'wrongtype', t, 0, {}, job, {}}
  end
  if #flat == 0 then  -- a hash is never empty: the key does not exist
    redis.call('LREM', plist, 1, job)
    return {'missing', '', 0, {}, job, {}}
  end
  -- the fields the step decides on, read in one pass over the reply
  local status, raw, parent, pq, alone = '', nil, nil, nil, false
  local dropped = {}
  for i = 1, #flat, 2 do
    local name = flat[i]
    if name == 'status' then status = flat[i + 1]
    elseif name == 'attempts' then raw = flat[i + 1]
    elseif name == 'parent' then parent = flat[i + 1]
    elseif name == 'parent_queue' then pq = flat[i + 1]
    elseif name == 'claim_alone' then alone = batch ~= nil
    elseif name == 'children_total' or name == 'children_done' or name == 'children_failed' then
      -- the fan-in counters are the broker's: a producer's non-integer value there would make every
      -- script that counts children fail on this job, so it is dropped (the broker writes integers)
      if not string.match(flat[i + 1], '^%d+$') then dropped[#dropped + 1] = name end
    end
  end
  if status == 'done' or status == 'failed' then
    redis.call('LREM', plist, 1, job)
    return {'final', status, 0, {}, job, {}}
  end
  -- a zip parent resuming its fan-in is started alone too (not a short job)
  if batch and status == 'waiting' then alone = true end
  if alone and batch > 1 then  -- it was just pushed onto our list's left end: back to the queue's oldest end
    redis.call('LMOVE', plist, queue, 'LEFT', 'RIGHT')
    return {'alone', status, 0, {}, job, {}}
  end
  local attempts = counted(raw)
  if #dropped > 0 then redis.call('HDEL', job, unpack(dropped)) end
  if attempts > tonumber(A[a + 4]) then
    -- used up before this claim (workers died on it and handed it back without the reaper)
    redis.call('LREM', plist, 1, job)
    redis.call('HDEL', job, 'claim')
    redis.call('HSET', job, 'status', 'failed', 'failure_type', 'system', 'reason', A[a + 6],
      'updated_at', now, 'finished_at', now)
    redis.call('EXPIRE', job, A[a + 7])
    redis.call('LPUSH', dead, job)
    child_ended(job, 'children_failed', now, {parent, pq})
    return {'dead', status, attempts - 1, {}, job, {}}
  end
  mark_started(job, token, consumer, now, attempts, batch ~= nil and not alone)
  -- the hash as it was read: the broker lays this claim's fields and `dropped` over it, which
  -- gives what HGETALL would return now
  if held then flat = {} end
  if batch then return {'ok', status, attempts, flat, job, dropped, alone and 1 or 0} end
  if with_len then return {'ok', status, attempts, flat, job, dropped, redis.call('LLEN', queue)} end
  return {'ok', status, attempts, flat, job, dropped}
end
