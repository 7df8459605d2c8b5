-- unfreeze.lua: lift the pool's kill switch.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::Unfreeze` (vault-core), read here as locals of the same names.
-- Returns {"frozen":false} | {"err":"pool_not_found"}.
if load_cfg() == nil then return fail('pool_not_found') end
redis.call('HSET', K.cfg, 'frozen', '0')
redis.call('HDEL', K.cfg, 'frozen_reason', 'frozen_at')
return reply({ frozen = false })
