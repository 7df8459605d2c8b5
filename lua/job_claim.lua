-- job_claim.lua: claim the next visible refresh job of the pool, hiding it for a visibility
-- timeout. A claimer that dies loses nothing: the job becomes visible again and the next
-- claim stamps a new job id on the token, so the dead claimer's completion is refused.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::JobClaim` (vault-core), read here as locals of the same names.
-- Returns {"job":{...}} | {} when nothing is visible or the pool is at its limit |
--   {"err":"pool_not_found"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local q = K.jobs
if external then q = xjobs_key() end
local claimed = q .. ':claimed'
redis.call('ZREMRANGEBYSCORE', claimed, '-inf', NOW)
if in_flight_limit ~= nil and redis.call('ZCARD', claimed) >= in_flight_limit then return reply({ at_limit = true }) end
local vis = NOW + visibility_ms
for _, id in ipairs(redis.call('ZRANGEBYSCORE', q, '-inf', NOW, 'LIMIT', 0, 10)) do
  local t = load_token(id)
  if t == nil or not renewable(t) or t.state == 'revoked' or t.state == 'expired' or t.state == 'quarantined' then
    redis.call('ZREM', q, id)
  else
    redis.call('ZADD', q, vis, id)
    redis.call('ZADD', claimed, vis, job_id)
    put(id, t, 'job_id', job_id)
    local gen = t.generation or '1'
    -- `token` is the internal id (what the claim check reads), `token_id` the user's (what
    -- the vault seals the new credential for).
    redis.call('HSET', job_key(job_id), 'token', id, 'token_id', t.id, 'gen', gen, 'attempts', num(t.refresh_attempts, 0))
    -- Outlives the visibility timeout so a late completion is told "stale", not "gone".
    redis.call('PEXPIRE', job_key(job_id), visibility_ms * 2 + 60000)
    return reply({ job = {
      job_id = job_id, token_id = t.id, generation = tonumber(gen), attempts = num(t.refresh_attempts, 0),
      refresh_kind = t.refresh_kind or 'none', refresh_ct = t.refresh_ct or '', refresh_key_id = t.refresh_key_id or '',
      refresh_pub = t.refresh_pub or '', proxy = t.proxy or '', proxy_ct = t.proxy_ct or '', proxy_key_id = t.proxy_key_id or '',
      binding_fp = t.binding_fp or '',
      labels = t.labels or '{}', expires_at = num(t.expires_at, 0), visible_at = vis,
    } })
  end
end
return reply({})
