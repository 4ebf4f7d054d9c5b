-- Set aside a claimed job whose key cannot be read as text (not UTF-8): the worker cannot name
-- it in any later step, so it leaves our processing list for the dead list, failed as bad input.
-- KEYS[1] processing list   processing-{queue}:{consumer_id}
-- KEYS[2] dead list         dead-{queue}
-- ARGV[1] job key           raw bytes
-- ARGV[2] reason
-- ARGV[3] now               ISO-8601 UTC
-- ARGV[4] expire_seconds
-- Reply: 1
redis.call('LREM', KEYS[1], 0, ARGV[1])
if redis.call('TYPE', ARGV[1])['ok'] == 'hash' then
  redis.call('HDEL', ARGV[1], 'claim')
  redis.call('HSET', ARGV[1], 'status', 'failed', 'failure_type', 'user', 'reason', ARGV[2],
    'updated_at', ARGV[3], 'finished_at', ARGV[3])
  redis.call('EXPIRE', ARGV[1], tonumber(ARGV[4]))
end
redis.call('LPUSH', KEYS[2], ARGV[1])
return 1
