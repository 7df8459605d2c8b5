-- pool_delete.lua: start deleting a pool and every key it owns. From this moment the pool is
-- gone for every transition (load_cfg); its tokens, leases and keys are removed in batches by
-- pool_op.lua (a `delete` operation), which supersedes any other operation.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::PoolDelete` (vault-core), read here as locals of the same names.
-- Returns {"tokens":n,"op_id"} | {"err":"pool_not_found"|"conflict"}.
-- Idempotency records and sessions are not tracked per pool; they expire on their own TTL.
if load_cfg() == nil then return fail('pool_not_found') end
local n = redis.call('HLEN', K.ids)
if n > 0 and not force then
  return fail('conflict', { detail = 'the pool holds ' .. n .. ' tokens; use ?force=true to delete them too' })
end
redis.call('HDEL', K.cfg, 'op_max_seq', 'op_rotation')
return reply({ tokens = n, op_id = op_start('delete') })
