-- Fenced final write: status, result fields, expiry, the pending job-log lines and the zip
-- parent's fan-in count, all in one step; the key leaves our processing list.
-- KEYS[1] job hash
-- KEYS[2] processing list   processing-{queue}:{consumer_id}
-- KEYS[3] stats counter     stats:{queue}:finished
-- KEYS[4] job log list      logs:{job}
-- ARGV[1] token             our claim's fencing token
-- ARGV[2] expire_seconds    TTL of the hash and its log
-- ARGV[3] final_status      done | failed
-- ARGV[4] log_cap           lines kept in the log list
-- ARGV[5] now               ISO-8601 UTC (the parent's queued_at when this is its last child)
-- ARGV[6] n                 number of field/value arguments that follow (even)
-- ARGV[7 .. 6+n]            field1, value1, ...
-- ARGV[7+n ..]              log lines
-- Reply: 1 finished now, 2 already finished by this claim (idempotent replay),
--        0 stale (another claim owns the job), -1 vanished (no such hash)
--#include child_ended.lua
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
