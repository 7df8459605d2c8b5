-- deposit.lua: add tokens to a pool (all or nothing).
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::Deposit` (vault-core), read here as locals of the same names.
-- `tokens` is a JSON array, each {id, secret_ct, key_id, fingerprint,
--   expires_at (ms, 0 = never), quota_limit ("" = pool's), proxy (shown: credentials redacted),
--   proxy_ct, proxy_key_id (the full proxy URL sealed, "" without credentials), binding_fp, labels (JSON text),
--   refresh_kind, refresh_ct, refresh_pub (JSON text)}. Secrets arrive encrypted (the refresh
--   credentials with the same key as the secret).
-- Returns {"ids":[...]} | {"err":"pool_not_found"|"conflict"|"invalid_request"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local toks = cjson.decode(tokens)
local reserve = setting(c, 'quota_reserve')
for _, d in ipairs(toks) do
  if redis.call('EXISTS', tkey(d.id)) == 1 then
    return fail('conflict', { detail = 'token ' .. d.id .. ' already exists in this pool' })
  end
  if d.expires_at > 0 and d.expires_at <= NOW then
    return fail('invalid_request', { detail = 'token ' .. d.id .. ' has already expired' })
  end
  if d.quota_limit ~= '' and tonumber(d.quota_limit) <= reserve then
    return fail('invalid_request', { detail = 'token ' .. d.id .. ': quota_limit must exceed the pool\'s quota_reserve (' .. reserve .. ')' })
  end
end
local ids = {}
for _, d in ipairs(toks) do
  local seq = redis.call('INCR', seq_key())
  redis.call('HSET', tkey(d.id), 'id', d.id, 'state', 'active', 'seq', seq,
    'secret_ct', d.secret_ct, 'key_id', d.key_id, 'fingerprint', d.fingerprint,
    'expires_at', d.expires_at, 'quota_limit', d.quota_limit, 'proxy', d.proxy,
    'proxy_ct', d.proxy_ct, 'proxy_key_id', d.proxy_key_id,
    'binding_fp', d.binding_fp, 'labels', d.labels, 'refresh_kind', d.refresh_kind,
    'refresh_ct', d.refresh_ct, 'refresh_key_id', d.key_id, 'refresh_pub', d.refresh_pub,
    'used', 0, 'reserved', 0, 'win_end', 0, 'leases', 0, 'cool_until', 0, 'strikes', 0,
    'last_error', '', 'created_at', NOW, 'last_leased_at', 0, 'generation', 1)
  redis.call('SADD', K.ids, d.id)
  back_in_rotation(d.id, load_token(d.id), c)
  ids[#ids + 1] = d.id
end
return reply({ ids = ids })
