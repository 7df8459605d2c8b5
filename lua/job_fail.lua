-- job_fail.lua: record a failed refresh attempt: retry later (transient) or quarantine the
-- token (permanent, or too many attempts). Checked against the claim like job_complete.
-- KEYS: the pool keys (see prelude).
-- ARGV[1] now ms or ""; ARGV[2] job id; ARGV[3] error text (never a secret);
-- ARGV[4] retry after ms ("" = permanent failure); ARGV[5] max attempts.
-- Returns {"token_id","state","attempts","retry_at"?} | {"err":"pool_not_found"|"job_gone"|"stale_job"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local job_id = ARGV[2]
local j, id_or_err, t = load_claim(job_id, true)
if j == nil then return id_or_err end
local id = id_or_err
local q = queue_of(t)
redis.call('ZREM', q .. ':claimed', job_id)
redis.call('DEL', job_key(job_id))
local attempts = num(t.refresh_attempts, 0) + 1
put(id, t, 'refresh_attempts', attempts)
put(id, t, 'last_error', ARGV[3])
put(id, t, 'job_id', '')
redis.call('HINCRBY', stats_key(), 'refresh_fail', 1)
if ARGV[4] == '' or attempts >= tonumber(ARGV[5]) then
  unschedule(id)
  exp_del(id, t)
  put(id, t, 'state', 'quarantined')
  reconcile(id, t, c)
  return reply({ token_id = id, state = t.view, attempts = attempts })
end
local retry_at = NOW + tonumber(ARGV[4])
redis.call('ZADD', q, retry_at, id)
return reply({ token_id = id, state = t.view, attempts = attempts, retry_at = retry_at })
