-- acquire.lua: lease one token of the pool.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::Acquire` (vault-core), read here as locals of the same names.
-- Returns [{"lease":{...}}, sealed secret] | {"err":"pool_not_found"|"pool_frozen"|"pool_exhausted"
--   (with retry_after_ms)|"idempotency_conflict"|"idempotency_mismatch"|"invalid_request"|
--   "pipeline_not_found"|"pipeline_not_ready"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
ttl_ms = lease_ttl(c, ttl_ms, setting(c, 'lease_ttl_s') * 1000)
local out, id = do_acquire(c, {
  lease_id = lease_id, worker = worker, units = units, costs = json_arg(costs), ttl_ms = ttl_ms,
  min_ttl_ms = min_token_ttl_ms or min_ttl_ms(c), session = session, idem = idem, idem_fp = idem_fp, exclude = '',
  pipeline = pipeline,
})
if type(out) == 'string' then return out end
return reply_with_secret(out, id)
