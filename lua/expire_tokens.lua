-- expire_tokens.lua: move tokens whose remaining life fell below min_token_ttl_s out of
-- rotation (`refreshing` with a job when refreshable, else `expired`).
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::ExpireTokens` (vault-core), read here as locals of the same names.
-- Returns {"moved":n}.
local c = load_cfg()
if c == nil then return reply({ moved = 0 }) end
local n = 0
local horizon = NOW + min_ttl_ms(c)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.exp, '-inf', '(' .. horizon, 'LIMIT', 0, batch)) do
  local t = load_token(id)
  if t == nil then
    redis.call('ZREM', K.exp, id)
  elseif in_rotation(t) then
    out_of_rotation(id, t, c)
    n = n + 1
  else
    exp_del(id, t)
  end
end
return reply({ moved = n })
