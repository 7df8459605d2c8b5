-- pool_upsert.lua: create or replace a pool's config (PUT semantics; `frozen` is kept).
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::PoolUpsert` (vault-core), read here as locals of the same names.
-- Returns {"created":bool,"op_id"} | {"err":"conflict"} (while another pool operation runs, or the pool
-- is being deleted). On update every token is re-placed under the new rules, in batches by
-- pool_op.lua (a `reconfigure` operation); a reconfigure already running starts over.
local existing = hgetall(K.cfg)
if existing ~= nil and op_running(existing) and existing.op ~= 'reconfigure' then
  return op_busy(existing)
end
write_cfg(cjson.decode(fields))
if existing == nil then
  redis.call('HSET', K.cfg, 'frozen', '0', 'created_at', NOW, 'layout_version', LAYOUT_VERSION)
  return reply({ created = true, op_id = '' })
end
return reply({ created = false, op_id = op_start('reconfigure') })
