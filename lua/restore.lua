-- restore.lua: an operator puts a token back into rotation: a quarantined one (strikes and
-- last error cleared), or one cooling down (429 or quota window), whose cooldown ends at once
-- with a fresh quota window. Units reserved by live leases stay reserved.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::Restore` (vault-core), read here as locals of the same names.
-- Returns {"state"} | {"err":"pool_not_found"|"token_not_found"|"conflict"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local id, t = find_token(token_id)
if t == nil then return fail('token_not_found') end
if t.state == 'quarantined' then
  put(id, t, 'state', 'active')
  put(id, t, 'strikes', 0)
  put(id, t, 'last_error', '')
  back_in_rotation(id, t, c)
elseif in_rotation(t) and redis.call('ZSCORE', K.cool, id) then
  local fv = { 'cool_until', 0 }
  quota_reset(t, c, fv)
  put_all(id, t, fv)
  reconcile(id, t, c)
else
  return fail('conflict', { detail = 'only a quarantined or cooling token can be restored; this one is ' .. t.view })
end
return reply({ state = t.view })
