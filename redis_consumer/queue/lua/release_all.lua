-- Return every key in a processing list to the queue head (a worker's own list after a lost
-- BLMOVE reply, an interrupted step, a Redis outage, or a clean shutdown).
-- With a consumer id (after a Redis outage cut a job short), a job this worker had claimed gets
-- its attempt back: the outage, not the job, ended it, so it must not count towards MAX_ATTEMPTS
-- (the claim step dead-letters a job whose attempts are used up).
-- With tokens, the jobs claimed with them (started ahead or in a batch, not run yet) get their
-- attempts back too, in the same pass, so every key keeps its place in the queue.
-- KEYS[1] processing list   processing-{queue}:{consumer_id}
-- KEYS[2] queue
-- ARGV[1] consumer_id       '' = move the keys only
-- ARGV[2] now               ISO-8601 UTC
-- ARGV[3..] tokens          of jobs started ahead or in a batch and not run ('' = none; optional)
-- Reply: number of keys moved
local tokens, any = {}, false
for i = 3, #ARGV do
  if ARGV[i] ~= '' then tokens[ARGV[i]] = true; any = true end
end
local n = 0
while true do
  local k = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not k then break end
  n = n + 1
  if (ARGV[1] ~= '' or any) and redis.call('TYPE', k)['ok'] == 'hash'
      and redis.call('HEXISTS', k, 'claim') == 1
      and ((ARGV[1] ~= '' and redis.call('HGET', k, 'identity_started') == ARGV[1])
           or (any and tokens[redis.call('HGET', k, 'claim')])) then
    local status = redis.call('HGET', k, 'status')
    if status ~= 'done' and status ~= 'failed' and status ~= 'waiting' then
      if tonumber(redis.call('HGET', k, 'attempts') or '0') > 0 then
        redis.call('HINCRBY', k, 'attempts', -1)
      end
      redis.call('HDEL', k, 'claim')
      redis.call('HSET', k, 'status', 'new', 'updated_at', ARGV[2], 'queued_at', ARGV[2])
    end
  end
end
return n
