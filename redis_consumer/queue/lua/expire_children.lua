-- When a zip parent finishes, its children, their job logs and the child list expire with it.
-- KEYS[1] children list     children:{parent}
-- ARGV[1] expire_seconds
-- ARGV[2] log prefix        `logs:` (+ child key = that child's log list)
-- Reply: number of children given the TTL
local ttl = tonumber(ARGV[1])
local kids = redis.call('LRANGE', KEYS[1], 0, -1)
for i = 1, #kids do
  redis.call('EXPIRE', kids[i], ttl)
  redis.call('EXPIRE', ARGV[2] .. kids[i], ttl)
end
redis.call('EXPIRE', KEYS[1], ttl)
return #kids
