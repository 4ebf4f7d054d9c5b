-- Create a job hash and LPUSH its key, only when the key does not exist yet: a producer that
-- retries after a lost reply can neither reset a finished job to `new` nor queue it twice
-- (a plain HSET + LPUSH, what the kiosk frontend does, is not safe to retry).
-- KEYS[1] job hash
-- KEYS[2] queue
-- ARGV[1 ..]                field1, value1, ...
-- Reply: 1 created and queued, 0 already existed (nothing changed)
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
redis.call('LPUSH', KEYS[2], KEYS[1])
return 1
