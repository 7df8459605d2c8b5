-- sunset_tokens.lua: revoke deprecated tokens whose sunset time has come.
-- KEYS: the pool keys (see prelude).
-- ARGV[1] now ms or ""; ARGV[2] max tokens in this call.
-- Returns {"revoked":[{"token_id","leases_ended":[...]}...]}.
local c = load_cfg()
if c == nil then return reply({ revoked = {} }) end
local sk = K.base .. 'sunset'
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', sk, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[2]))) do
  redis.call('ZREM', sk, id)
  local t = hgetall(tkey(id))
  if t ~= nil and t.state == 'deprecated' then
    local ended = end_token_leases(id)
    t = hgetall(tkey(id))
    put(id, t, 'state', 'revoked')
    put(id, t, 'revoked_at', NOW)
    put(id, t, 'last_error', 'sunset')
    exp_del(id, t)
    unschedule(id)
    reconcile(id, t, c)
    out[#out + 1] = { token_id = id, leases_ended = ended }
  end
end
return reply({ revoked = out })
