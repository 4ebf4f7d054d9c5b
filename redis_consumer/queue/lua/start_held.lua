-- start_held(K, A, k, a): the claim step for a job claimed ahead whose fields, as read when it was
-- held, passed every check of the claim step (the broker already ran them on that copy). Only what
-- can have changed since is read again: status and attempts (another claim of a key queued twice)
-- and `claim`. A held key has none (it was not started; requeues, the reaper and releases drop it):
-- one there means another worker started it after the reaper took it back from us (we were
-- presumed dead), so it is not ours to start. The claim's HSET is claim_step's. Anything unexpected
-- goes to claim_step itself (held = true: it also checks the key is still in our list), which
-- decides as for any claim.
-- K, A, k, a as for claim_step (A[a+5] is the held key). Returns claim_step's reply, without fields.
-- Needs claim_step.lua included before it.
local function start_held(K, A, k, a)
  local job = A[a + 5]
  local cur = redis.pcall('HMGET', job, 'status', 'attempts', 'claim')
  if type(cur) == 'table' and not cur.err and cur[1] and cur[1] ~= 'done' and cur[1] ~= 'failed'
      and not cur[3] then
    local attempts = counted(cur[2])
    if attempts <= tonumber(A[a + 4]) then
      local consumer, now = A[a + 2], A[a + 3]
      redis.call('HSET', job, 'status', 'started', 'claim', A[a + 1], 'updated_by', consumer,
        'identity_started', consumer, 'started_at', now, 'updated_at', now, 'attempts', attempts)
      return {'ok', cur[1], attempts, {}, job, {}}
    end
  end
  return claim_step(K, A, k, a, false, true)
end
