-- pool_rotate_cancel.lua: start rolling an emergency rotation back: tokens it deprecated that
-- were not refreshed or revoked yet become active again, their sunset and unclaimed refresh
-- jobs dropped, in batches by pool_op.lua (a `cancel` operation). A rotation still deprecating
-- its tokens is superseded: the cancel's scan restores whatever it had reached.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::PoolRotateCancel` (vault-core), read here as locals of the same names.
-- Returns {"cancelling":rotation id,"op_id"} | {"err":"pool_not_found"|"conflict"}.
local c = load_cfg_all()
if c == nil then return fail('pool_not_found') end
local rid = c.rotation_id
if rid == nil or rid == '' then return fail('conflict', { detail = 'no rotation to cancel' }) end
if op_running(c) and c.op ~= 'rotate' then return op_busy(c) end
redis.call('HDEL', K.cfg, 'op_max_seq')
return reply({ cancelling = rid, op_id = op_start('cancel', { rotation = rid }) })
