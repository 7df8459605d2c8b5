-- sunset_tokens.lua: revoke deprecated tokens whose sunset time has come.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::SunsetTokens` (vault-core), read here as locals of the same names.
-- Returns {"revoked":[{"token_id","leases_ended":[...]}...]}.
local c = load_cfg()
if c == nil then return reply({ revoked = {} }) end
local sk = sunset_key()
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', sk, '-inf', NOW, 'LIMIT', 0, batch)) do
  redis.call('ZREM', sk, id)
  local t = load_token(id)
  if t ~= nil and t.state == 'deprecated' then
    out[#out + 1] = { token_id = t.id, leases_ended = revoke_token(id, c, 'sunset') }
  end
end
return reply({ revoked = out })
