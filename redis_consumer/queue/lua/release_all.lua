-- Return every key in a processing list to the queue head without touching attempts (a worker's
-- own list after a lost BLMOVE reply, an interrupted step, or a clean shutdown).
-- KEYS[1] processing list   processing-{queue}:{consumer_id}
-- KEYS[2] queue
-- Reply: number of keys moved
local n = 0
while true do
  local k = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not k then break end
  n = n + 1
end
return n
