-- pool_rotate.lua: emergency rotation of a pool: every active token becomes `deprecated`
-- (leasable only when nothing else is, never preferred), gets a refresh job (or an external
-- login job), and is revoked at the sunset unless it was refreshed first. Tokens deposited
-- later are active and preferred at once. O(tokens): an operator's emergency action.
-- KEYS: the pool keys (see prelude).
-- ARGV[1] now ms or ""; ARGV[2] sunset ms; ARGV[3] reason; ARGV[4] rotation id.
-- Returns {"rotation_id","tokens","sunset_at"} | {"err":"pool_not_found"|"conflict"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local sunset, rid = tonumber(ARGV[2]), ARGV[4]
if c.rotation_id ~= nil and c.rotation_id ~= '' and num(c.rotation_sunset_at, 0) > NOW then
  return fail('conflict', { detail = 'a rotation is already running; cancel it first' })
end
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', K.ids)) do
  local t = hgetall(tkey(id))
  if t ~= nil and t.state == 'active' then
    put(id, t, 'state', 'deprecated')
    put(id, t, 'sunset_at', sunset)
    put(id, t, 'rotation', rid)
    redis.call('ZADD', K.base .. 'sunset', sunset, id)
    if refreshable(t) then enqueue_job(id, t) end
    reconcile(id, t, c)
    n = n + 1
  end
end
redis.call('HSET', K.cfg, 'rotation_id', rid, 'rotation_started_at', NOW, 'rotation_sunset_at', sunset,
  'rotation_reason', ARGV[3], 'rotation_total', n, 'rotation_refreshed', 0)
return reply({ rotation_id = rid, tokens = n, sunset_at = sunset })
