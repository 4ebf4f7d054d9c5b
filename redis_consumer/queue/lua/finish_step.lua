-- The body of finish.lua as a function, so that finish_claim.lua can run it before a claim.
-- finish_step(K, A, k, a): finish.lua's KEYS are K[k+1..k+4], its ARGV A[a+1..] (offsets, so a
-- combined script passes its own KEYS/ARGV without copying them); returns finish.lua's reply.
-- finish_job(job, plist, stats, logs, A, a, stop): the same with its keys named and its ARGV
-- ending at A[stop] (the log lines are A[last field + 1 .. stop]; finish_batch.lua packs several).
--#include child_ended.lua
local function finish_job(job, plist, stats, logs, A, a, stop)
  local cur = redis.call('HMGET', job, 'claim', 'status', 'parent', 'parent_queue')
  if cur[1] ~= A[a + 1] then
    redis.call('LREM', plist, 0, job)
    if redis.call('EXISTS', job) == 0 then return -1 end
    return 0
  end
  local status = cur[2]
  if status == 'done' or status == 'failed' then
    redis.call('LREM', plist, 0, job)
    return 2
  end
  local expire, final = A[a + 2], A[a + 3]  -- expire as sent: a string needs no conversion
  local first = a + 7  -- the first field name
  local last = a + 6 + tonumber(A[a + 6])  -- the last field value
  redis.call('HSET', job, 'status', final, unpack(A, first, last))
  redis.call('EXPIRE', job, expire)
  redis.call('LREM', plist, 0, job)
  redis.call('INCR', stats)
  local cap = tonumber(A[a + 4])
  if cap > 0 then
    if stop > last then
      -- the list exists after the push; trim only when it outgrew the cap
      if redis.call('RPUSH', logs, unpack(A, last + 1, stop)) > cap then
        redis.call('LTRIM', logs, -cap, -1)
      end
    end
    redis.call('EXPIRE', logs, expire)  -- a no-op when the job has no log list
  end
  -- a zip child is counted by its parent: the link as read above, unless the result fields just
  -- rewrote it (then child_ended reads it again)
  local link = {cur[3], cur[4]}
  for i = first, last, 2 do
    if A[i] == 'parent' or A[i] == 'parent_queue' then link = nil end
  end
  if link == nil or link[1] then
    child_ended(job, final == 'done' and 'children_done' or 'children_failed', A[a + 5], link)
  end
  return 1
end

local function finish_step(K, A, k, a)
  return finish_job(K[k + 1], K[k + 2], K[k + 3], K[k + 4], A, a, #A)
end
