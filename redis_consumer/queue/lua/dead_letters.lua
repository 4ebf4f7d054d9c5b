-- Requeue or purge dead letters, one key at a time inside one step, so a job can never be both
-- dead and waiting. Requeue gives a fresh start (status new, attempts 0, failure fields removed,
-- expiry cleared) and LPUSHes it; a requeued zip child is un-counted from its waiting parent (it
-- is counted again when it ends) or detached from a parent that already ended. Purge deletes the
-- hash and its log. Keys not in the dead list, or whose hash expired, are dropped.
-- KEYS[1] dead list         dead-{queue}
-- KEYS[2] queue
-- ARGV[1] now               ISO-8601 UTC
-- ARGV[2] mode              requeue | purge
-- ARGV[3] log prefix        `logs:` (+ job key = its log list)
-- ARGV[4 ..]                job keys
-- Reply: {moved, dropped}: moved = requeued (or purged), dropped = skipped
local moved, dropped = 0, 0
for i = 4, #ARGV do
  local k = ARGV[i]
  if redis.call('LREM', KEYS[1], 0, k) == 0 then
    dropped = dropped + 1
  elseif ARGV[2] == 'purge' then
    redis.call('DEL', k, ARGV[3] .. k)
    moved = moved + 1
  elseif redis.call('TYPE', k)['ok'] ~= 'hash' then
    dropped = dropped + 1
  else
    local parent = redis.call('HGET', k, 'parent')
    if parent and parent ~= '' then
      if redis.call('HGET', parent, 'status') == 'waiting' then
        redis.call('HINCRBY', parent, 'children_failed', -1)
      else
        redis.call('HDEL', k, 'parent', 'parent_queue')
      end
    end
    redis.call('HDEL', k, 'claim', 'reason', 'failure_type', 'finished_at', 'last_error', 'progress')
    redis.call('HSET', k, 'status', 'new', 'attempts', 0, 'updated_at', ARGV[1], 'requeued_at', ARGV[1])
    redis.call('PERSIST', k)
    redis.call('LPUSH', KEYS[2], k)
    moved = moved + 1
  end
end
return {moved, dropped}
