-- restore.lua: an operator puts a quarantined token back into rotation.
-- KEYS: the pool keys (see prelude).
-- ARGV[1] now ms or ""; ARGV[2] token id.
-- Returns {"state"} | {"err":"pool_not_found"|"token_not_found"|"conflict"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local id = ARGV[2]
local t = hgetall(tkey(id))
if t == nil then return fail('token_not_found') end
if t.state ~= 'quarantined' then
  return fail('conflict', { detail = 'only a quarantined token can be restored; this one is ' .. t.state })
end
put(id, t, 'state', 'active')
put(id, t, 'strikes', 0)
put(id, t, 'last_error', '')
back_in_rotation(id, t, c)
return reply({ state = t.view })
