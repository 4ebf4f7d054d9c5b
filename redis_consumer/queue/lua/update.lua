-- Fenced write while a job runs: set fields and/or append job-log lines, only while our claim
-- holds, so a worker presumed dead (a zombie) can neither overwrite nor add to a newer claim's
-- story, and a job whose hash vanished (deleted, expired, Redis wiped) is not recreated.
-- KEYS[1] job hash
-- KEYS[2] job log list      logs:{job}
-- ARGV[1] token             our claim's fencing token
-- ARGV[2] log_cap           lines kept in the log list (0 = no log list)
-- ARGV[3] expire_seconds    TTL of the log list
-- ARGV[4] n                 number of field/value arguments that follow (even)
-- ARGV[5 .. 4+n]            field1, value1, ...
-- ARGV[5+n ..]              log lines
-- Reply: 1 written, 0 stale (another claim owns the job), -1 vanished (no such hash)
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then
  if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
  return 0
end
local n = tonumber(ARGV[4])
if n > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 5, 4 + n))
end
local cap = tonumber(ARGV[2])
if #ARGV > 4 + n and cap > 0 then
  if redis.call('RPUSH', KEYS[2], unpack(ARGV, 5 + n)) > cap then  -- trim only when over the cap
    redis.call('LTRIM', KEYS[2], -cap, -1)
  end
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
end
return 1
