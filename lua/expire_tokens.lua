-- expire_tokens.lua: move tokens whose remaining life fell below min_token_ttl_s out of
-- rotation (`refreshing` with a job when refreshable, else `expired`).
-- KEYS: the pool keys (see rules/base.lua).
-- ARGV[1] now ms or ""; ARGV[2] max tokens in this call.
-- Returns {"moved":n}.
local c = load_cfg()
if c == nil then return reply({ moved = 0 }) end
local n = 0
local horizon = NOW + min_ttl_ms(c)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.exp, '-inf', '(' .. horizon, 'LIMIT', 0, tonumber(ARGV[2]))) do
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
