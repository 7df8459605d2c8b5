-- pool_rotate.lua: start an emergency rotation of a pool: every active token becomes
-- `deprecated` (leasable only when nothing else is, never preferred), gets a refresh job (or
-- an external login job), and is revoked at the sunset unless it was refreshed first. Tokens
-- deposited later are active and preferred at once. This script records the rotation; the
-- tokens are deprecated in batches by pool_op.lua (a `rotate` operation).
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::PoolRotate` (vault-core), read here as locals of the same names.
-- Returns {"rotation_id","sunset_at","op_id"} | {"err":"pool_not_found"|"conflict"}.
local c = load_cfg_all()
if c == nil then return fail('pool_not_found') end
local sunset, rid = sunset_at, rotation_id
if c.rotation_id ~= nil and c.rotation_id ~= '' and num(c.rotation_sunset_at, 0) > NOW then
  return fail('conflict', { detail = 'a rotation is already running; cancel it first' })
end
if op_running(c) then return op_busy(c) end
redis.call('HSET', K.cfg, 'rotation_id', rid, 'rotation_started_at', NOW, 'rotation_sunset_at', sunset,
  'rotation_reason', reason, 'rotation_total', 0, 'rotation_refreshed', 0)
local op_id = op_start('rotate', { max_seq = num(redis.call('GET', seq_key()), 0) })
return reply({ rotation_id = rid, sunset_at = sunset, op_id = op_id })
