-- deprecate.lua: staged rotation of one token: still leasable, never preferred, revoked at sunset.
-- KEYS: the pool keys (see rules/base.lua).
-- ARGV[1] now ms or ""; ARGV[2] token id; ARGV[3] sunset ms ("" = no sunset).
-- Returns {"state"} | {"err":"pool_not_found"|"token_not_found"|"conflict"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local id = ARGV[2]
local t = load_token(id)
if t == nil then return fail('token_not_found') end
if t.state == 'revoked' or t.state == 'expired' then
  return fail('conflict', { detail = 'the token is ' .. t.state })
end
if t.state == 'active' then put(id, t, 'state', 'deprecated') end
if ARGV[3] ~= '' then
  put(id, t, 'sunset_at', ARGV[3])
  redis.call('ZADD', sunset_key(), tonumber(ARGV[3]), id)
end
reconcile(id, t, c)
return reply({ state = t.view })
