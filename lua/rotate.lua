-- rotate.lua: release a lease with its report and lease a different token in the same step
-- (the 401-mid-job path: the worker retries at once with a healthy token).
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::Rotate` (vault-core), read here as locals of the same names.
-- `report` as in release.lua.
-- Returns [{"lease":{...},"released":{"token_id","state"}}, sealed secret] | {"err":...} as acquire/release.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local err, l, t = do_release(c, lease_id, report)
if err then return err end
local out, id = do_acquire(c, {
  lease_id = new_lease_id, worker = l.worker or '', units = num(l.units, 1), costs = l.costs,
  ttl_ms = num(l.ttl_ms, setting(c, 'lease_ttl_s') * 1000), min_ttl_ms = min_ttl_ms(c),
  session = '', idem = '', exclude = l.token, pipeline = l.pipeline,
})
if type(out) == 'string' then out = cjson.decode(out) end
out.released = { token_id = t and t.id or l.token, state = t and t.view or 'deleted' }
if id == nil then return reply(out) end
return reply_with_secret(out, id)
