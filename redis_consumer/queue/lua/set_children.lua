-- Record a zip parent's child list (archive order) atomically: replace whatever a previous,
-- interrupted fan-out left, in one step (pushed in chunks: Lua's unpack has a stack limit).
-- KEYS[1] children list     children:{parent}
-- ARGV[1 ..]                child keys, in order
-- Reply: number of children recorded
redis.call('DEL', KEYS[1])
local chunk = 1000
for i = 1, #ARGV, chunk do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(#ARGV, i + chunk - 1)))
end
return #ARGV
