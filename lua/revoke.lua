-- revoke.lua: revoke a token at once: out of rotation for good, its live leases end.
-- KEYS: the pool keys (see prelude).
-- ARGV[1] now ms or ""; ARGV[2] token id; ARGV[3] reason.
-- Returns {"leases_ended":[...],"already":bool} | {"err":"pool_not_found"|"token_not_found"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local id = ARGV[2]
local t = hgetall(tkey(id))
if t == nil then return fail('token_not_found') end
if t.state == 'revoked' then return reply({ leases_ended = {}, already = true }) end
local ended = end_token_leases(id)
t = hgetall(tkey(id))
put(id, t, 'state', 'revoked')
put(id, t, 'revoked_at', NOW)
put(id, t, 'last_error', ARGV[3])
exp_del(id, t)
unschedule(id)
redis.call('ZREM', K.base .. 'sunset', id)
reconcile(id, t, c)
return reply({ leases_ended = ended, already = false })
