-- eligibility.lua: whether a token can take a lease now — every rule at once (rotation, TTL
-- margin, quota, concurrency, cooldown) — and when one may next.

-- Is token `id` leasable now for a lease of `units` requests and `costs` (`lease_costs`) that
-- needs `need_ttl_ms` of token life? Tokens that fail a pool-wide rule are moved out of `ready`
-- on the way (lazy repair).
local function eligible(id, t, c, units, costs, need_ttl_ms)
  if t == nil or not in_rotation(t) then return false end
  if too_short_lived(t, c) then out_of_rotation(id, t, c); return false end
  roll_window(id, t, c)
  if num(t.cool_until, 0) > NOW or num(t.leases, 0) >= max_leases(c) then
    reconcile(id, t, c); return false
  end
  local short, room = quota_short(t, c, units, costs)
  if short ~= nil then
    if room <= 0 then reconcile(id, t, c) else count_binding(short) end
    return false
  end
  local at = num(t.expires_at, 0)
  if at > 0 and at - NOW < need_ttl_ms then return false end
  return true
end

-- How long until something in the pool can become leasable: a cooldown ends or a lease ends.
local function retry_after_ms()
  local best = nil
  local c1 = redis.call('ZRANGE', K.cool, 0, 0, 'WITHSCORES')
  if #c1 > 0 then best = tonumber(c1[2]) end
  local l1 = redis.call('ZRANGE', K.leases, 0, 0, 'WITHSCORES')
  if #l1 > 0 and (best == nil or tonumber(l1[2]) < best) then best = tonumber(l1[2]) end
  if best == nil then return nil end
  return math.max(0, best - NOW)
end
