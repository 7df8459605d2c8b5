-- pool_rotate_cancel.lua: roll an emergency rotation back: tokens it deprecated that were not
-- refreshed or revoked yet are active again, their sunset and unclaimed refresh jobs dropped.
-- KEYS: the pool keys (see prelude).
-- ARGV[1] now ms or "".
-- Returns {"restored":n} | {"err":"pool_not_found"|"conflict"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local rid = c.rotation_id
if rid == nil or rid == '' then return fail('conflict', { detail = 'no rotation to cancel' }) end
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', K.ids)) do
  local t = hgetall(tkey(id))
  if t ~= nil and t.rotation == rid and t.state == 'deprecated' then
    put(id, t, 'state', 'active')
    put(id, t, 'sunset_at', '')
    put(id, t, 'rotation', '')
    redis.call('ZREM', K.base .. 'sunset', id)
    if t.job_id == nil or t.job_id == '' then
      redis.call('ZREM', queue_of(t), id)
    end
    reconcile(id, t, c)
    n = n + 1
  end
end
redis.call('HDEL', K.cfg, 'rotation_id', 'rotation_started_at', 'rotation_sunset_at', 'rotation_reason',
  'rotation_total', 'rotation_refreshed')
return reply({ restored = n })
