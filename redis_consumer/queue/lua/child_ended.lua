-- Fan-in helper included (by `--#include child_ended.lua`) into every script that ends a job:
-- finish, requeue (retries used up), reap, claim (attempts used up).
-- A zip child (fields `parent` and `parent_queue`) is counted by its parent as done or failed;
-- the last child to end puts the waiting parent back on its queue. A dead-lettered child still
-- counts, so a parent never waits forever.
-- child_ended(k, field, now): k = child key, field = 'children_done' | 'children_failed',
-- now = ISO-8601 timestamp written as the parent's `queued_at`; link = optional {parent,
-- parent_queue} already read by the caller (saves reading them again).
local function child_ended(k, field, now, link)
  link = link or redis.call('HMGET', k, 'parent', 'parent_queue')
  local parent, pq = link[1], link[2]
  if not parent or not pq or parent == '' or pq == '' then return end
  -- a producer may name any key as `parent`: count only into a hash, and treat a counter that
  -- is not an integer as 0 (an error here would stop the script that ends this child)
  if redis.call('TYPE', parent)['ok'] ~= 'hash' then return end
  if type(redis.pcall('HINCRBY', parent, field, 1)) ~= 'number' then redis.call('HSET', parent, field, 1) end
  local total = tonumber(redis.call('HGET', parent, 'children_total') or '-1')
  local ended = (tonumber(redis.call('HGET', parent, 'children_done') or '0') or 0)
              + (tonumber(redis.call('HGET', parent, 'children_failed') or '0') or 0)
  if total and total > 0 then
    redis.call('HSET', parent, 'progress', math.floor(100 * ended / total))
    if ended == total and redis.call('HGET', parent, 'status') == 'waiting' then
      redis.call('HSET', parent, 'queued_at', now)
      redis.call('RPUSH', pq, parent)
    end
  end
end
