-- freeze.lua: the pool's kill switch: no new leases; optionally end live leases, up to
-- `batch` per call (the caller calls again while a call comes back full: no lease can be
-- created in between, the pool being frozen from the first call on).
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::Freeze` (vault-core), read here as locals of the same names.
-- Returns {"leases_ended":[{"lease_id","token_id"}...]} | {"err":"pool_not_found"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
if c.frozen ~= '1' then redis.call('HSET', K.cfg, 'frozen', '1', 'frozen_at', NOW) end
redis.call('HSET', K.cfg, 'frozen_reason', reason)
local ended = {}
if end_leases then
  ended = reclaim_leases(c, redis.call('ZRANGE', K.leases, 0, batch - 1))
end
return reply({ leases_ended = ended })
