-- Batches (CLAIM_BATCH > 1): the final writes of several short jobs and the starts of the next
-- ones in one atomic step, so a script call's fixed cost (set-up, round trip, system calls) is paid
-- once per batch instead of once per job. First up to ARGV[6] final writes, each exactly
-- finish.lua's (fenced by its own token, its own reply, the zip parent's fan-in count); then up to
-- ARGV[7] claims of the oldest waiting keys, each exactly claim.lua's step (its own fencing token,
-- attempts counted, dead letters, wrongtype, missing, final). When more than one is asked for, each
-- job started gets `claim_batch` = its token: jobs started together cannot tell which one was
-- running at a SIGKILL, so the reaper gives such a job its attempt back and marks it
-- `claim_alone`, and a job so marked is only ever started alone (first of its call, and no more
-- after it). A job started alone keeps no `claim_batch` (one started as the only one of its call
-- loses it again): the reaper charges it as any job.
-- KEYS[1] queue             {queue}
-- KEYS[2] processing list   processing-{queue}:{consumer_id}
-- KEYS[3] dead list         dead-{queue}
-- KEYS[4] stats counter     stats:{queue}:finished
-- KEYS[3+2i], KEYS[4+2i]    final write i (1..ARGV[6]): its job hash, its job log list
-- ARGV[1] consumer_id
-- ARGV[2] now               ISO-8601 UTC (the claims' stamp)
-- ARGV[3] max_attempts
-- ARGV[4] dead reason       written on a job dead-lettered by a claim
-- ARGV[5] expire_seconds    TTL of a dead-lettered job
-- ARGV[6] finishes          how many final writes follow
-- ARGV[7] starts            how many claims to try at most (0 = none)
-- ARGV[8 .. 7+starts]       one fresh fencing token per claim
-- then per final write:     n, followed by n values: finish.lua's ARGV (token .. log lines)
-- Reply: {finish replies, claim replies, waiting}: finish.lua's reply per final write, in order; claim.lua's
--   reply (no queue length; a 7th element 1 when the job was started alone) per claim tried, ending
--   at `empty` (queue empty), `alone` (a job to start alone next, back at the queue's oldest end) or
--   an `ok` started alone; false for a claim step that raised an error (the last one); waiting: the
--   queue's length after the claims (0 when none was asked for), which sizes the broker's next batch
--#include finish_step.lua
--#include claim_step.lua
local plist, stats = KEYS[2], KEYS[4]
local nstart = tonumber(ARGV[7])
local done = {}
local a = 7 + nstart
for i = 1, tonumber(ARGV[6]) do
  local n = tonumber(ARGV[a + 1])
  done[i] = finish_job(KEYS[3 + 2 * i], plist, stats, KEYS[4 + 2 * i], ARGV, a + 1, a + 1 + n)
  a = a + 1 + n
end
local claims = {}
local started, last = 0, nil
-- claim_step's ARGV for each claim: token (per claim), consumer, now, max_attempts, '' (take the
-- oldest waiting key), dead reason, expire
local args = {'', ARGV[1], ARGV[2], ARGV[3], '', ARGV[4], ARGV[5]}
for i = 1, nstart do
  args[1] = ARGV[7 + i]
  local ok, reply = pcall(claim_step, KEYS, args, 0, 0, false, false, nstart > 1 and started + 1 or nil)
  if not ok then  -- the claim step raised an error: the final writes stand, the broker gives back what moved
    claims[i] = false
    break
  end
  claims[i] = reply
  local outcome = reply[1]
  if outcome == 'empty' or outcome == 'alone' then break end
  if outcome == 'ok' then
    started = started + 1
    last = reply[5]
    if reply[7] == 1 then break end
  end
end
if started == 1 and nstart > 1 then
  redis.call('HDEL', last, 'claim_batch')  -- the only one started: it ran alone
end
local waiting = 0
if nstart > 0 then waiting = redis.call('LLEN', KEYS[1]) end
return {done, claims, waiting}
