-- release.lua: end a lease with the worker's report.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::Release` (vault-core), read here as locals of the same names.
-- report.outcome: ok|unauthorized|rate_limited|forbidden|suspect (`scripts::ReportArgs`).
-- Returns {"token_id","state"} | {"err":"pool_not_found"|"lease_gone"|"invalid_request"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local err, l, t = do_release(c, lease_id, report)
if err then return err end
return reply({ token_id = t and t.id or l.token, state = t and t.view or 'deleted' })
