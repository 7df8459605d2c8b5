-- reseal.lua: replace a token's ciphertexts with ones sealed under the current master key
-- (same plaintext). Compare-and-set: only if the stored ciphertexts are still the ones the
-- caller decrypted, so a refresh that landed meanwhile is never overwritten.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::Reseal` (vault-core), read here as locals of the same names.
-- Returns {"resealed":bool} | {"err":"token_not_found"}.
local id, t = find_token(token_id)
if t == nil then return fail('token_not_found') end
if (redis.call('GET', seckey(id)) or '') ~= secret_read or (t.refresh_ct or '') ~= refresh_ct_read or (t.proxy_ct or '') ~= proxy_ct_read then
  return reply({ resealed = false })
end
redis.call('SET', seckey(id), secret)
redis.call('HSET', tkey(id), 'key_id', key_id)
if refresh_ct ~= '' then redis.call('HSET', tkey(id), 'refresh_ct', refresh_ct, 'refresh_key_id', refresh_key_id) end
if proxy_ct ~= '' then redis.call('HSET', tkey(id), 'proxy_ct', proxy_ct, 'proxy_key_id', proxy_key_id) end
return reply({ resealed = true })
