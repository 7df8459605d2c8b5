-- release.lua: end a lease with the worker's report.
-- KEYS: the pool keys (see rules/base.lua).
-- ARGV[1] now ms or ""; ARGV[2] lease id; ARGV[3] used ("" = all reserved units);
-- ARGV[4] outcome ok|unauthorized|rate_limited|forbidden|suspect; ARGV[5] retry_after ms or "";
-- ARGV[6] remaining (from the target API) or ""; ARGV[7] reset_at ms or "".
-- Returns {"token_id","state"} | {"err":"pool_not_found"|"lease_gone"|"invalid_request"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local err, l, t = do_release(c, ARGV[2], report_args(3))
if err then return err end
return reply({ token_id = l.token, state = t and t.view or 'deleted' })
