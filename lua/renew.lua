-- renew.lua: extend a live lease, optionally changing its reserved units.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::Renew` (vault-core), read here as locals of the same names.
-- Returns [{"lease":{...}}, sealed secret] | {"err":"pool_not_found"|"lease_gone"|"invalid_request"|
--   "token_expiring"|"quota_exhausted"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local lid = lease_id
local l = live_lease(c, lid)
if l == nil then return fail('lease_gone') end
local t = load_token_hot(l.token)
if t == nil or not in_rotation(t) then return fail('lease_gone') end
ttl_ms = lease_ttl(c, ttl_ms, num(l.ttl_ms, setting(c, 'lease_ttl_s') * 1000))
local deadline = NOW + ttl_ms
local at = num(t.expires_at, 0)
if at > 0 and at < deadline then
  return fail('token_expiring', { detail = 'the token expires before the renewed lease would end' })
end
local old_units = num(l.units, 1)
units = units or old_units
roll_window(l.token, t, c)
if units > old_units then
  local short, room = quota_short(t, c, units - old_units, nil, 'requests')
  if short ~= nil then
    local which = ''
    if short.name ~= 'default' then which = ' (quota ' .. short.name .. ')' end
    return fail('quota_exhausted', { detail = 'the token has ' .. math.max(room, 0) .. ' more units in this window' .. which })
  end
end
local fv = {}
quota_rereserve(t, c, units - old_units, fv)
if #fv > 0 then put_all(l.token, t, fv) end
l.units = str(units)
l.deadline = str(deadline)
l.ttl_ms = str(ttl_ms)
lease_store(lid, l)
redis.call('ZADD', K.leases, deadline, lid)
if l.idem ~= nil and l.idem ~= '' then redis.call('PEXPIRE', idem_key(l.idem), ttl_ms) end
reconcile(l.token, t, c)
return reply_with_secret({ lease = lease_view(lid, l, t) }, l.token)
