-- reseal.lua: replace a token's ciphertexts with ones sealed under the current master key
-- (same plaintext). Compare-and-set: only if the stored ciphertexts are still the ones the
-- caller decrypted, so a refresh that landed meanwhile is never overwritten.
-- KEYS: the pool keys (see rules/base.lua).
-- ARGV[1] now ms or ""; ARGV[2] token id; ARGV[3] secret ciphertext read; ARGV[4] new secret
-- ciphertext; ARGV[5] new key id; ARGV[6] refresh ciphertext read; ARGV[7] new refresh
-- ciphertext ("" = leave it); ARGV[8] its key id; ARGV[9] proxy ciphertext read; ARGV[10] new
-- proxy ciphertext ("" = leave it); ARGV[11] its key id.
-- Returns {"resealed":bool} | {"err":"token_not_found"}.
local id = ARGV[2]
local t = load_token(id)
if t == nil then return fail('token_not_found') end
if t.secret_ct ~= ARGV[3] or (t.refresh_ct or '') ~= ARGV[6] or (t.proxy_ct or '') ~= ARGV[9] then
  return reply({ resealed = false })
end
redis.call('HSET', tkey(id), 'secret_ct', ARGV[4], 'key_id', ARGV[5])
if ARGV[7] ~= '' then redis.call('HSET', tkey(id), 'refresh_ct', ARGV[7], 'refresh_key_id', ARGV[8]) end
if ARGV[10] ~= '' then redis.call('HSET', tkey(id), 'proxy_ct', ARGV[10], 'proxy_key_id', ARGV[11]) end
return reply({ resealed = true })
