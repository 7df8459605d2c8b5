-- revoke.lua: revoke a token at once: out of rotation for good, its live leases end.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::Revoke` (vault-core), read here as locals of the same names.
-- Returns {"leases_ended":[...],"already":bool} | {"err":"pool_not_found"|"token_not_found"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local id, t = find_token(token_id)
if t == nil then return fail('token_not_found') end
if t.state == 'revoked' then return reply({ leases_ended = {}, already = true }) end
return reply({ leases_ended = revoke_token(id, c, reason), already = false })
