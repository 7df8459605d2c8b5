-- idempotency.lua: the idempotency rule — a lease request's `Idempotency-Key` (scoped to the
-- client by the caller) names at most one lease while that lease lives: a retry gets it back, a
-- different request under the same key is refused. The key lives as long as its lease.

-- The answer for a key already used (the lease again with its token's internal id, or an
-- encoded refusal); nil for a new key.
local function idem_replay(c, o)
  if o.idem == '' then return nil end
  local existing = redis.call('GET', idem_key(o.idem))
  if not existing then return nil end
  local l = live_lease(c, existing)
  if l == nil then return fail('idempotency_conflict') end
  if (l.idem_fp or '') ~= (o.idem_fp or '') then return fail('idempotency_mismatch') end
  local v = lease_view(existing, l, load_token_hot(l.token))
  v.replayed = true
  return { lease = v }, l.token
end

local function idem_record(o)
  if o.idem ~= '' then redis.call('SET', idem_key(o.idem), o.lease_id, 'PX', o.ttl_ms) end
end
