-- pool_reseal.lua: rewrite the pool's default refresh settings with its client secret sealed
-- under the current master key (or sealed at all: pools from before secrets were sealed kept it
-- in the settings' JSON). Compare-and-set, like reseal.lua: a pool reconfigured meanwhile is
-- left alone.
-- KEYS: the pool keys (see rules/base.lua).
-- ARGV[1] now ms or ""; ARGV[2] settings JSON read; ARGV[3] ciphertext read; ARGV[4] new
-- settings JSON; ARGV[5] new ciphertext; ARGV[6] its key id.
-- Returns {"resealed":bool} | {"err":"pool_not_found"}.
local c = load_cfg_all()
if c == nil then return fail('pool_not_found') end
if (c.refresh or '') ~= ARGV[2] or (c.refresh_ct or '') ~= ARGV[3] then return reply({ resealed = false }) end
redis.call('HSET', K.cfg, 'refresh', ARGV[4], 'refresh_ct', ARGV[5], 'refresh_key_id', ARGV[6])
return reply({ resealed = true })
