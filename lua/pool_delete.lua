-- pool_delete.lua: delete a pool and every key it owns.
-- KEYS: the pool keys (see prelude).
-- ARGV[1] now ms or ""; ARGV[2] "1" = force (delete even while it holds tokens).
-- Returns {"deleted":n_tokens} | {"err":"pool_not_found"|"conflict"}.
-- Idempotency records and sessions are not tracked per pool; they expire on their own TTL.
if redis.call('EXISTS', K.cfg) == 0 then return fail('pool_not_found') end
local n = redis.call('SCARD', K.ids)
if n > 0 and ARGV[2] ~= '1' then
  return fail('conflict', { detail = 'the pool holds ' .. n .. ' tokens; use ?force=true to delete them too' })
end
for _, lid in ipairs(redis.call('ZRANGE', K.leases, 0, -1)) do redis.call('DEL', lkey(lid)) end
for _, id in ipairs(redis.call('SMEMBERS', K.ids)) do
  redis.call('DEL', tkey(id), tlkey(id))
end
for _, view in ipairs({ 'active', 'leased', 'cooling', 'refreshing', 'quarantined', 'deprecated', 'revoked', 'expired' }) do
  redis.call('DEL', vkey(view))
end
redis.call('DEL', K.cfg, K.ready, K.cool, K.leases, K.exp, K.ids, K.jobs, stats_key(),
  K.base .. 'seq', K.base .. 'sunset', due_key(), xjobs_key(), K.jobs .. ':claimed',
  xjobs_key() .. ':claimed')
return reply({ deleted = n })
