-- A job's final write and the next claim in one atomic step (one script call per job instead of
-- two): finish.lua, then claim.lua's step (without its queue length) on the job this worker
-- claimed ahead (ARGV[5], still in our processing list) or, with ARGV[5] empty, on the oldest
-- waiting key; then, when ARGV[8] > 0 and jobs are waiting, up to ARGV[8] more keys are claimed
-- ahead ("held"): moved into our processing list and read, but not started (no token, no
-- attempt counted, hash untouched), so a SIGKILL charges them nothing (the reaper puts a key
-- without a `claim` back as it was). The claim has exactly claim.lua's rules (fencing token,
-- attempts, dead letters); the worker asks for it only while it is not stopping.
-- KEYS[1..3]  claim.lua's KEYS     queue, processing list, dead list
-- KEYS[4..7]  finish.lua's KEYS    job hash, processing list, stats counter, job log list
-- ARGV[1..7]  claim.lua's ARGV     (ARGV[5]: a held key to start, or '' to take the oldest waiting one)
-- ARGV[8]     hold                 how many more keys to claim ahead (0 = none)
-- ARGV[9]     sure                 '1' = the broker checked the held key's fields (start_held.lua)
-- ARGV[10..]  finish.lua's ARGV
-- Reply: {finish reply, claim reply, held}
--   claim reply: claim.lua's (no fields when ARGV[5] named a held key; `lost` when that key is no
--   longer in our list); false when the claim step raised an error (the finish stands; the broker
--   returns whatever the claim moved to the queue)
--   held: flat list key1, fields1, ... (fields = HGETALL as a flat list, false for a key that
--   is not a hash), oldest first; empty when nothing was held
--#include finish_step.lua
--#include claim_step.lua
--#include start_held.lua
local done = finish_step(KEYS, ARGV, 3, 9)
local ok, claimed
if ARGV[9] == '1' then
  ok, claimed = pcall(start_held, KEYS, ARGV, 0, 0)
else
  ok, claimed = pcall(claim_step, KEYS, ARGV, 0, 0, false, ARGV[5] ~= '')
end
if not ok then claimed = false end
local held = {}
if claimed and claimed[1] == 'ok' then
  for _ = 1, tonumber(ARGV[8]) do
    local key = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
    if not key then break end
    local flat = redis.pcall('HGETALL', key)
    if type(flat) ~= 'table' or flat.err then flat = false end
    held[#held + 1] = key
    held[#held + 1] = flat
  end
end
return {done, claimed, held}
