-- return_cooled.lua: put tokens whose cooldown (429 or exhausted window) ended back in rotation.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::ReturnCooled` (vault-core), read here as locals of the same names.
-- Returns {"returned":n}.
local c = load_cfg()
if c == nil then return reply({ returned = 0 }) end
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.cool, '-inf', NOW, 'LIMIT', 0, batch)) do
  local t = load_token(id)
  if t == nil then
    redis.call('ZREM', K.cool, id)
  else
    reconcile(id, t, c)
    if redis.call('ZSCORE', K.cool, id) == false then n = n + 1 end
  end
end
return reply({ returned = n })
