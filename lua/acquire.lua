-- acquire.lua: lease one token of the pool.
-- KEYS: the pool keys (see rules/base.lua).
-- ARGV[1] now ms or ""; ARGV[2] lease id; ARGV[3] worker; ARGV[4] units (>= 1);
-- ARGV[5] lease ttl ms ("" = pool lease_ttl_s); ARGV[6] min token ttl ms ("" = pool's);
-- ARGV[7] session ("" = none); ARGV[8] idempotency key ("" = none), scoped to the client;
-- ARGV[9] fingerprint of the request (a reused key must come with the same request).
-- Returns {"lease":{...}} | {"err":"pool_not_found"|"pool_frozen"|"pool_exhausted"
--   (with retry_after_ms)|"idempotency_conflict"|"idempotency_mismatch"|"invalid_request"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local ttl_ms = tonumber(ARGV[5]) or setting(c, 'lease_ttl_s') * 1000
if ttl_ms > setting(c, 'max_lease_ttl_s') * 1000 then
  return fail('invalid_request', { detail = 'ttl_s exceeds the pool\'s max_lease_ttl_s (' .. c.max_lease_ttl_s .. ')' })
end
return do_acquire(c, {
  lease_id = ARGV[2], worker = ARGV[3], units = tonumber(ARGV[4]), ttl_ms = ttl_ms,
  min_ttl_ms = tonumber(ARGV[6]) or min_ttl_ms(c), session = ARGV[7], idem = ARGV[8], idem_fp = ARGV[9], exclude = '',
})
