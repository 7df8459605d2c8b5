-- deprecate.lua: staged rotation of one token: still leasable, never preferred, revoked at sunset.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::Deprecate` (vault-core), read here as locals of the same names.
-- Returns {"state"} | {"err":"pool_not_found"|"token_not_found"|"conflict"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local id, t = find_token(token_id)
if t == nil then return fail('token_not_found') end
if t.state == 'revoked' or t.state == 'expired' then
  return fail('conflict', { detail = 'the token is ' .. t.state })
end
if t.state == 'active' then put(id, t, 'state', 'deprecated') end
if sunset_at ~= nil then
  put(id, t, 'sunset_at', sunset_at)
  redis.call('ZADD', sunset_key(), sunset_at, id)
end
reconcile(id, t, c)
return reply({ state = t.view })
