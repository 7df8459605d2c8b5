-- pool_reseal.lua: rewrite the pool's default refresh settings with its client secret sealed
-- under the current master key (or sealed at all: pools from before secrets were sealed kept it
-- in the settings' JSON). Compare-and-set, like reseal.lua: a pool reconfigured meanwhile is
-- left alone.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::PoolReseal` (vault-core), read here as locals of the same names.
-- Returns {"resealed":bool} | {"err":"pool_not_found"}.
local c = load_cfg_all()
if c == nil then return fail('pool_not_found') end
if (c.refresh or '') ~= refresh_read or (c.refresh_ct or '') ~= refresh_ct_read then return reply({ resealed = false }) end
redis.call('HSET', K.cfg, 'refresh', refresh, 'refresh_ct', refresh_ct, 'refresh_key_id', refresh_key_id)
return reply({ resealed = true })
