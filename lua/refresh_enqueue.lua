-- refresh_enqueue.lua: take a token out of rotation and enqueue a refresh job for it now.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::RefreshEnqueue` (vault-core), read here as locals of the same names.
-- Returns {"state"} | {"err":"pool_not_found"|"token_not_found"|"conflict"}.
-- A token already queued keeps its place (a token is enqueued at most once at a time).
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local id, t = find_token(token_id)
if t == nil then return fail('token_not_found') end
if not refreshable(t) then return fail('conflict', { detail = 'the token has no refresh method' }) end
if t.state == 'revoked' then return fail('conflict', { detail = 'the token is revoked' }) end
exp_del(id, t)
redis.call('ZREM', due_key(), id)
put(id, t, 'state', 'refreshing')
enqueue_job(id, t)
reconcile(id, t, c)
return reply({ state = t.view })
