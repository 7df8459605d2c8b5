-- revocation.lua: the revocation rule — a revoked token is out of rotation for good, its live
-- leases end at once (their units count as used), and nothing schedules it again.

-- Revoke token `id` (it exists and is not revoked yet). Returns the ids of the leases it ended.
local function revoke_token(id, c, reason)
  local ended = end_token_leases(id, c)
  local t = load_token(id)
  fp_del(id, redis.call('HGET', tkey(id), 'fingerprint'))
  put(id, t, 'state', 'revoked')
  put(id, t, 'revoked_at', NOW)
  put(id, t, 'last_error', reason)
  exp_del(id, t)
  unschedule(id)
  redis.call('ZREM', sunset_key(), id)
  reconcile(id, t, c)
  return ended
end
