-- Park a zip parent until its children end (fan-out): status waiting, claim dropped, off our
-- processing list, `progress` = the share of children already ended (0 on a first fan-out).
-- If every child already ended, the parent goes straight back onto its queue,
-- so no completion is ever missed.
-- KEYS[1] job hash
-- KEYS[2] processing list   processing-{queue}:{consumer_id}
-- KEYS[3] queue             the parent's own queue ({queue}-zip)
-- ARGV[1] token             our claim's fencing token
-- ARGV[2] children_total
-- ARGV[3] now               ISO-8601 UTC
-- ARGV[4 ..]                field1, value1, ... (extra fields to set)
-- Reply: 1 parked, 2 parked and requeued at once, 0 stale (another claim), -1 vanished
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then
  redis.call('LREM', KEYS[2], 0, KEYS[1])
  if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
  return 0
end
local total = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'status', 'waiting', 'children_total', total, unpack(ARGV, 4))
redis.call('HDEL', KEYS[1], 'claim')
redis.call('LREM', KEYS[2], 0, KEYS[1])
local ended = (tonumber(redis.call('HGET', KEYS[1], 'children_done') or '0') or 0)
            + (tonumber(redis.call('HGET', KEYS[1], 'children_failed') or '0') or 0)
if total > 0 then
  redis.call('HSET', KEYS[1], 'progress', math.floor(100 * math.min(ended, total) / total))
end
if ended >= total then
  redis.call('HSET', KEYS[1], 'queued_at', ARGV[3])
  redis.call('RPUSH', KEYS[3], KEYS[1])
  return 2
end
return 1
