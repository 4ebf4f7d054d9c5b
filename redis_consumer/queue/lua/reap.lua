-- Reaper: return the jobs of every consumer whose heartbeat expired to the queue head (oldest
-- first), dead-letter those that used up their attempts (counted by a zip parent), forget the
-- consumer and its processing list. A key without a `claim` was never started by that consumer
-- (claimed ahead and held behind its running job, or moved by BLMOVE just before it died): it
-- goes back as it is, its attempts untouched, so only the job that was running is charged. A job
-- started in a batch (`claim_batch` = its `claim`, see finish_batch.lua) gets its attempt back and
-- is marked `claim_alone`: it is started alone next time, so a poison job is charged only for the
-- runs where it ran alone, and the innocent jobs of its batch are never dead-lettered.
-- KEYS[1] consumers zset    consumers:{queue}
-- KEYS[2] queue
-- KEYS[3] dead list         dead-{queue}
-- ARGV[1] processing prefix processing-{queue}:  (+ consumer id = that worker's list)
-- ARGV[2] max_attempts
-- ARGV[3] now               ISO-8601 UTC
-- ARGV[4] dead reason
-- ARGV[5] expire_seconds    TTL of a dead-lettered job
-- Reply: {recovered, dead_lettered, consumers_reaped}
--#include child_ended.lua
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
      local claim = redis.call('HMGET', k, 'claim', 'claim_batch')
      if not claim[1] then
        if status ~= 'done' and status ~= 'failed' then
          redis.call('RPUSH', KEYS[2], k)
          recovered = recovered + 1
        end
      elseif status ~= 'done' and status ~= 'failed' then
        local attempts = tonumber(redis.call('HGET', k, 'attempts') or '0')
        redis.call('HDEL', k, 'claim')
        if claim[2] == claim[1] then
          -- started in a batch (finish_batch.lua): which job of it was running is unknown, so this
          -- one is not charged, and it is started alone from now on (then charged as any job)
          redis.call('HDEL', k, 'claim_batch')
          if attempts > 0 then attempts = attempts - 1 end
          redis.call('HSET', k, 'attempts', attempts, 'claim_alone', '1')
        end
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
