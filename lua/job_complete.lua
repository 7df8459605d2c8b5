-- job_complete.lua: store a refreshed credential. Checked against the claim: the job id must
-- still be the token's current claim and the token's generation unchanged since the claim,
-- so a late or duplicate completion never overwrites a newer secret or revives a revoked token.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::JobComplete` (vault-core), read here as locals of the same names.
-- Returns {"token_id","generation","state","error"?,"attempts"?,"retry_at"?}
--   | {"err":"pool_not_found"|"job_gone"|"stale_job"}.
-- A credential too short-lived for the pool's margin is stored (its refresh token may have been
-- rotated, so the old one is gone) but counts as a failed attempt: queued again at once, the
-- provider would be called in a loop.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local j, id_or_err, t = load_claim(job_id, false)
if j == nil then return id_or_err end
local id = id_or_err
local q = queue_of(t)
redis.call('ZREM', q, id)
redis.call('ZREM', q .. ':claimed', job_id)
redis.call('DEL', job_key(job_id))
exp_del(id, t)
local gen = num(t.generation, 1) + 1
redis.call('SET', seckey(id), secret)
put(id, t, 'key_id', key_id)
fp_del(id, t.fingerprint)
fp_add(id, fingerprint)
put(id, t, 'fingerprint', fingerprint)
put(id, t, 'expires_at', expires_at)
if refresh_ct ~= '' then
  put(id, t, 'refresh_ct', refresh_ct)
  put(id, t, 'refresh_key_id', refresh_key_id)
end
put(id, t, 'generation', gen)
put(id, t, 'refreshed_at', NOW)
-- What the provider issues, for the pool's margin check (GET /v1/pools/{pool}/status).
local lives_s = issued_lifetime_s(t)
if lives_s ~= nil then redis.call('HSET', K.cfg, 'issued_ttl_s', lives_s) end
if too_short_lived(t, c) then
  put(id, t, 'state', 'refreshing')
  reconcile(id, t, c)
  redis.call('HINCRBY', stats_key(), 'refresh_short_lived', 1)
  local err = 'issued token lives ' .. lives_s .. ' s, pool needs ' .. math.floor(min_ttl_ms(c) / 1000) .. ' s'
  local r = refresh_attempt_failed(id, t, c, err, retry_in_ms, max_attempts)
  r.generation = gen
  return reply(r)
end
put(id, t, 'strikes', 0)
put(id, t, 'last_error', '')
put(id, t, 'job_id', '')
put(id, t, 'refresh_attempts', 0)
-- A refreshed deprecated token is current again: its sunset no longer applies, and it counts
-- toward the emergency rotation that deprecated it.
redis.call('ZREM', sunset_key(), id)
local rotated = t.rotation == SCHEDULED
redis.call('SREM', rotating_key(), id)
if t.rotation ~= nil and t.rotation ~= '' then
  if t.rotation == c.rotation_id then redis.call('HINCRBY', K.cfg, 'rotation_refreshed', 1) end
  put(id, t, 'rotation', '')
  put(id, t, 'sunset_at', '')
end
put(id, t, 'state', 'active')
redis.call('HINCRBY', stats_key(), 'refresh_ok', 1)
back_in_rotation(id, t, c)
return reply({ token_id = t.id, generation = gen, state = t.view, rotated = rotated })
