-- revoke_fingerprint.lua: revoke every token of the pool whose secret has fingerprint
-- `fingerprint` (a credential revoked everywhere: the same account may sit in several pools and
-- regions), by the revocation rule, found through the fingerprint index.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::RevokeFingerprint` (vault-core), read here as locals of the same names.
-- Returns {"revoked":[{"token_id","leases_ended":[...]}...]}: the tokens revoked by this call.
-- One already revoked is not listed, so applying the same revocation again changes and
-- announces nothing. A pool that does not exist (or no longer) has nothing to revoke.
local c = load_cfg()
if c == nil then return reply({ revoked = {} }) end
local out = {}
for _, id in ipairs(fp_ids(fingerprint)) do
  local t = load_token(id)
  if t ~= nil and t.state ~= 'revoked' then
    out[#out + 1] = { token_id = t.id, leases_ended = revoke_token(id, c, reason) }
  end
end
return reply({ revoked = out })
