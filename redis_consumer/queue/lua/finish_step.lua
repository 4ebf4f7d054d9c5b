-- The body of finish.lua as a function, so that finish_claim.lua can run both in one script.
-- finish_step(KEYS, ARGV): the KEYS/ARGV documented in finish.lua; returns its reply.
--#include child_ended.lua
local function finish_step(KEYS, ARGV)
  local cur = redis.call('HMGET', KEYS[1], 'claim', 'status', 'parent', 'parent_queue')
  if cur[1] ~= ARGV[1] then
    redis.call('LREM', KEYS[2], 0, KEYS[1])
    if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
    return 0
  end
  local status = cur[2]
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
  if cap > 0 then
    if #ARGV > 6 + nfields then
      -- the list exists after the push; trim only when it outgrew the cap
      if redis.call('RPUSH', KEYS[4], unpack(ARGV, 7 + nfields)) > cap then
        redis.call('LTRIM', KEYS[4], -cap, -1)
      end
    end
    redis.call('EXPIRE', KEYS[4], expire)  -- a no-op when the job has no log list
  end
  -- the parent link as read above, unless the result fields just rewrote it
  local link = {cur[3], cur[4]}
  for i = 7, 6 + nfields, 2 do
    if ARGV[i] == 'parent' or ARGV[i] == 'parent_queue' then link = nil end
  end
  if ARGV[3] == 'done' then
    child_ended(KEYS[1], 'children_done', ARGV[5], link)
  else
    child_ended(KEYS[1], 'children_failed', ARGV[5], link)
  end
  return 1
end
