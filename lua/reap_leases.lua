-- reap_leases.lua: end leases whose deadline passed (their worker died or forgot them).
-- A reaped lease counts all its reserved units as used: nobody can say otherwise.
-- KEYS: the pool keys (see prelude).
-- ARGV[1] now ms or ""; ARGV[2] max leases to reap in this call.
-- Returns {"reaped":[{"lease_id","token_id"}...]}.
local c = load_cfg()
local reaped = {}
for _, lid in ipairs(redis.call('ZRANGEBYSCORE', K.leases, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[2]))) do
  local l, t = end_lease(lid, nil)
  if l == nil then
    redis.call('ZREM', K.leases, lid)
  else
    reaped[#reaped + 1] = { lease_id = lid, token_id = l.token }
    if t ~= nil and c ~= nil then reconcile(l.token, t, c) end
  end
end
return reply({ reaped = reaped })
