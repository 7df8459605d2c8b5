-- freeze.lua: the pool's kill switch: no new leases; optionally end every live lease.
-- KEYS: the pool keys (see prelude).
-- ARGV[1] now ms or ""; ARGV[2] "1" = end live leases; ARGV[3] reason.
-- Returns {"leases_ended":[{"lease_id","token_id"}...]} | {"err":"pool_not_found"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
redis.call('HSET', K.cfg, 'frozen', '1', 'frozen_reason', ARGV[3], 'frozen_at', NOW)
local ended = {}
if ARGV[2] == '1' then
  for _, lid in ipairs(redis.call('ZRANGE', K.leases, 0, -1)) do
    local l, t = end_lease(lid, nil)
    if l ~= nil then
      ended[#ended + 1] = { lease_id = lid, token_id = l.token }
      if t ~= nil then reconcile(l.token, t, c) end
    end
  end
end
return reply({ leases_ended = ended })
