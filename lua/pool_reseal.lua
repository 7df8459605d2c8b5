-- pool_reseal.lua: replace the pool's sealed client secret (its default refresh settings) with
-- one sealed under the current master key (same plaintext). Compare-and-set, like reseal.lua:
-- a pool reconfigured meanwhile is left alone.
-- KEYS: the pool keys (see prelude).
-- ARGV[1] now ms or ""; ARGV[2] ciphertext read; ARGV[3] new ciphertext; ARGV[4] its key id.
-- Returns {"resealed":bool} | {"err":"pool_not_found"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
if (c.refresh_ct or '') ~= ARGV[2] or ARGV[2] == '' then return reply({ resealed = false }) end
redis.call('HSET', K.cfg, 'refresh_ct', ARGV[3], 'refresh_key_id', ARGV[4])
return reply({ resealed = true })
