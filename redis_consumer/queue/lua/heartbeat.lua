-- Heartbeat: score = Redis server time + ttl (pod clocks may disagree; the server's is the one
-- clock), and register the queue name for discovery by the exporter and `watch`.
-- KEYS[1] consumers zset    consumers:{queue}
-- KEYS[2] queues set        queues
-- ARGV[1] consumer_id
-- ARGV[2] ttl_seconds
-- ARGV[3] queue
-- Reply: the server time now (unix seconds, as a string)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('SADD', KEYS[2], ARGV[3])
return tostring(now)
