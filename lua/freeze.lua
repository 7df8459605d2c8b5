-- freeze.lua: the pool's kill switch: no new leases; optionally end live leases, up to
-- ARGV[4] per call (the caller calls again while a call comes back full: no lease can be
-- created in between, the pool being frozen from the first call on).
-- KEYS: the pool keys (see rules/base.lua).
-- ARGV[1] now ms or ""; ARGV[2] "1" = end live leases; ARGV[3] reason; ARGV[4] max leases.
-- Returns {"leases_ended":[{"lease_id","token_id"}...]} | {"err":"pool_not_found"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
if c.frozen ~= '1' then redis.call('HSET', K.cfg, 'frozen', '1', 'frozen_at', NOW) end
redis.call('HSET', K.cfg, 'frozen_reason', ARGV[3])
local ended = {}
if ARGV[2] == '1' then
  ended = reclaim_leases(c, redis.call('ZRANGE', K.leases, 0, tonumber(ARGV[4]) - 1))
end
return reply({ leases_ended = ended })
