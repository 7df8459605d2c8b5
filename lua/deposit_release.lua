-- deposit_release.lua: give back a deposit's reservations (made by deposit_reserve.lua with
-- the deadline `reserved_until`) when the deposit stops before writing them; another deposit's
-- reservation of the same id is left alone.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::DepositRelease` (vault-core), read here as locals of the same names.
-- Returns {"released":n}.
local depositing = depositing_key()
local n = 0
for _, id in ipairs(ids) do
  if tonumber(redis.call('ZSCORE', depositing, id)) == reserved_until then
    redis.call('ZREM', depositing, id)
    n = n + 1
  end
end
return reply({ released = n })
