-- deposit_reserve.lua: the first step of a deposit: check a batch of its tokens and reserve
-- their ids until `reserved_until` (ms), so that the deposit's writes (deposit.lua) cannot
-- conflict and the deposit lands whole or not at all. A reservation that lapsed is let go first.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::DepositReserve` (vault-core), read here as locals of the same names.
-- `tokens` is a JSON array of {id, fingerprint, expires_at (ms, 0 = never), quota_limit ("" = pool's)}.
-- A token already in the pool with the same secret is not reserved: the deposit leaves it as
-- it is (a deposit tried again, or one stopped midway, completes).
-- Returns {"reserved":n} | {"err":"pool_not_found"|"conflict"|"invalid_request"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local toks = cjson.decode(tokens)
local reserve = setting(c, 'quota_reserve')
local depositing = depositing_key()
redis.call('ZREMRANGEBYSCORE', depositing, '-inf', NOW)
local fresh = {}
for _, d in ipairs(toks) do
  local there = deposited(d)
  if there == nil then
    return fail('conflict', { detail = 'token ' .. d.id .. ' already exists in this pool with another secret' })
  end
  if not there then fresh[#fresh + 1] = d.id end
  if redis.call('ZSCORE', depositing, d.id) then
    return fail('conflict', { detail = 'token ' .. d.id .. ' is being deposited by another request' })
  end
  if d.expires_at > 0 and d.expires_at <= NOW then
    return fail('invalid_request', { detail = 'token ' .. d.id .. ' has already expired' })
  end
  if d.quota_limit ~= '' and tonumber(d.quota_limit) <= reserve then
    return fail('invalid_request', { detail = 'token ' .. d.id .. ': quota_limit must exceed the pool\'s quota_reserve (' .. reserve .. ')' })
  end
end
for _, id in ipairs(fresh) do redis.call('ZADD', depositing, reserved_until, id) end
return reply({ reserved = #fresh })
