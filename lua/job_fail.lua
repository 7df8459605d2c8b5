-- job_fail.lua: record a failed refresh attempt: retry later (transient) or quarantine the
-- token (permanent, or too many attempts). Checked against the claim like job_complete.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::JobFail` (vault-core), read here as locals of the same names.
-- Returns {"token_id","state","attempts","retry_at"?,"error"} | {"err":"pool_not_found"|"job_gone"|"stale_job"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local j, id_or_err, t = load_claim(job_id, true)
if j == nil then return id_or_err end
local id = id_or_err
redis.call('ZREM', queue_of(t) .. ':claimed', job_id)
redis.call('DEL', job_key(job_id))
return reply(refresh_attempt_failed(id, t, c, error_text, retry_in_ms, max_attempts))
