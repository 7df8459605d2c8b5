-- revoke_fingerprint.lua: revoke up to `batch` tokens of the pool whose secret has fingerprint
-- `fingerprint` (a credential revoked everywhere: the same account may sit in several pools and
-- regions), by the revocation rule, found through the fingerprint index. A revoked token leaves
-- the index, so the next call goes on with the rest; vault-core calls until `more` is false.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::RevokeFingerprint` (vault-core), read here as locals of the same names.
-- Returns {"revoked":[{"token_id","leases_ended":[...]}...],"more":bool}: the tokens revoked by
-- this call. Applying the same revocation again finds nothing, so it announces nothing. A pool
-- that does not exist (or no longer) has nothing to revoke.
local c = load_cfg()
if c == nil then return reply({ revoked = {}, more = false }) end
local out = {}
for _, id in ipairs(fp_ids(fingerprint, batch)) do
  local t = load_token(id)
  if t == nil or t.state == 'revoked' then
    -- Not a live token (an index entry a crash or an older vault left): dropped.
    fp_del(id, fingerprint)
  else
    out[#out + 1] = { token_id = t.id, leases_ended = revoke_token(id, c, reason) }
  end
end
return reply({ revoked = out, more = redis.call('HEXISTS', fps_key(), fingerprint) == 1 })
