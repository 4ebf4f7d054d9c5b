-- start_held(K, A, k, a): the claim step for a job claimed ahead whose fields, as read when it was
-- held, passed every check of the claim step (the broker already ran them on that copy). Only what
-- can have changed since is read again: status and attempts (another claim of a key queued twice)
-- and `claim`, and whether the key is still in our processing list. A held key has no `claim` (it
-- was not started; requeues, the reaper and releases drop it): one there means another worker
-- started it after the reaper took it back from us (we were presumed dead). A key no longer in
-- our list was taken back by the reaper and waits in the queue again (no claim yet): not ours to
-- start either. The claim's HSET is claim_step's (`mark_started`). Anything unexpected goes to
-- claim_step itself (held = true: `lost` when the key left our list), which decides as for any
-- claim.
-- K, A, k, a as for claim_step (A[a+5] is the held key). Returns claim_step's reply, without fields.
-- Needs claim_step.lua included before it.
local function start_held(K, A, k, a)
  local job = A[a + 5]
  local cur = redis.pcall('HMGET', job, 'status', 'attempts', 'claim')
  if type(cur) == 'table' and not cur.err and cur[1] and cur[1] ~= 'done' and cur[1] ~= 'failed'
      and not cur[3] and redis.call('LPOS', K[k + 2], job) then
    local attempts = counted(cur[2])
    if attempts <= tonumber(A[a + 4]) then
      mark_started(job, A[a + 1], A[a + 2], A[a + 3], attempts)
      return {'ok', cur[1], attempts, {}, job, {}}
    end
  end
  return claim_step(K, A, k, a, false, true)
end
