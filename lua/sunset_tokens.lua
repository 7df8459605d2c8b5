-- sunset_tokens.lua: revoke deprecated tokens whose sunset time has come.
-- KEYS: the pool keys (see rules/base.lua).
-- ARGV[1] now ms or ""; ARGV[2] max tokens in this call.
-- Returns {"revoked":[{"token_id","leases_ended":[...]}...]}.
local c = load_cfg()
if c == nil then return reply({ revoked = {} }) end
local sk = sunset_key()
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', sk, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[2]))) do
  redis.call('ZREM', sk, id)
  local t = load_token(id)
  if t ~= nil and t.state == 'deprecated' then
    out[#out + 1] = { token_id = id, leases_ended = revoke_token(id, c, 'sunset') }
  end
end
return reply({ revoked = out })
