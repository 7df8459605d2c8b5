-- reap_leases.lua: end leases whose deadline passed (their worker died or forgot them).
-- A reaped lease counts all its reserved units as used: nobody can say otherwise.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::ReapLeases` (vault-core), read here as locals of the same names.
-- Returns {"reaped":[{"lease_id","token_id"}...]}.
return reply({ reaped = reap_expired(load_cfg(), batch) })
