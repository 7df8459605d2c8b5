-- deposit.lua: add a batch of tokens to a pool, all or nothing: the second step of a deposit,
-- after deposit_reserve.lua checked the tokens and reserved their ids until `reserved_until`.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::Deposit` (vault-core), read here as locals of the same names.
-- `tokens` is a JSON array, each {id, key_id, fingerprint,
--   expires_at (ms, 0 = never), quota_limit ("" = pool's), proxy (shown: credentials redacted),
--   proxy_ct, proxy_key_id (the full proxy URL sealed, "" without credentials), binding_fp, labels (JSON text),
--   refresh_kind, refresh_ct, refresh_pub (JSON text)}; `secrets` are their sealed secrets, as
--   bytes, in the same order. Secrets arrive encrypted (the refresh credentials with the same
--   key as the secret).
-- A token already in the pool with the same secret is left as it is.
-- Returns {"ids":[...] (every token's), "unchanged":[...] (those already in)}
--   | {"err":"pool_not_found"|"conflict"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local toks = cjson.decode(tokens)
local depositing = depositing_key()
local ids, unchanged, fresh = {}, {}, {}
for i, d in ipairs(toks) do
  ids[#ids + 1] = d.id
  local there = deposited(d)
  if not there then
    if there == nil or tonumber(redis.call('ZSCORE', depositing, d.id)) ~= reserved_until or reserved_until <= NOW then
      return fail('conflict', { detail = 'the reservation of token ' .. d.id .. ' lapsed before it was written; deposit again' })
    end
    fresh[#fresh + 1] = { d = d, i = i }
  else
    unchanged[#unchanged + 1] = d.id
  end
end
for _, f in ipairs(fresh) do
  local d = f.d
  local id = internal_of(redis.call('INCR', seq_key()))
  redis.call('HSET', tkey(id), unpack(stored_fields({
    id = d.id, state = 'active', key_id = d.key_id, fingerprint = d.fingerprint, created_at = NOW,
    expires_at = d.expires_at, quota_limit = d.quota_limit, proxy = d.proxy, proxy_ct = d.proxy_ct,
    proxy_key_id = d.proxy_key_id, binding_fp = d.binding_fp, labels = d.labels,
    refresh_kind = d.refresh_kind, refresh_ct = d.refresh_ct, refresh_key_id = d.key_id,
    refresh_pub = d.refresh_pub,
  })))
  redis.call('SET', seckey(id), secrets[f.i])
  redis.call('HSET', K.ids, d.id, id)
  fp_add(id, d.fingerprint)
  redis.call('ZREM', depositing, d.id)
  back_in_rotation(id, load_token(id), c)
end
return reply({ ids = ids, unchanged = unchanged })
