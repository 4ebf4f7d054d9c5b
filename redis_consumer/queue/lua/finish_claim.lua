-- A job's final write and the next claim in one atomic step (one script call per job instead of
-- two): finish.lua, then claim.lua with an empty job key (LMOVE the oldest waiting key), without
-- its queue length. The claim has exactly claim.lua's rules (fencing token, attempts, dead
-- letters); the worker asks for it only while it is not stopping, so it never holds more than the
-- one job it is about to start.
-- KEYS[1..3]  claim.lua's KEYS     queue, processing list, dead list
-- KEYS[4..7]  finish.lua's KEYS    job hash, processing list, stats counter, job log list
-- ARGV[1..7]  claim.lua's ARGV     (ARGV[5] is '')
-- ARGV[8..]   finish.lua's ARGV
-- Reply: {finish reply, claim reply} (claim reply false when the claim step raised an error:
--         the finish stands; the broker returns whatever the claim moved to the queue)
--#include finish_step.lua
--#include claim_step.lua
local done = finish_step(KEYS, ARGV, 3, 7)
local ok, claimed = pcall(claim_step, KEYS, ARGV, 0, 0, false)
if not ok then claimed = false end
return {done, claimed}
