-- reap_leases.lua: end leases whose deadline passed (their worker died or forgot them).
-- A reaped lease counts all its reserved units as used: nobody can say otherwise.
-- KEYS: the pool keys (see rules/base.lua).
-- ARGV[1] now ms or ""; ARGV[2] max leases to reap in this call.
-- Returns {"reaped":[{"lease_id","token_id"}...]}.
return reply({ reaped = reap_expired(load_cfg(), tonumber(ARGV[2])) })
