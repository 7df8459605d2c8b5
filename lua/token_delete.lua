-- token_delete.lua: remove a token and everything that refers to it; its live leases end.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::TokenDelete` (vault-core), read here as locals of the same names.
-- Returns {"leases_ended":[...]} | {"err":"pool_not_found"|"token_not_found"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local id, t = find_token(token_id)
if t == nil then return fail('token_not_found') end
local ended = end_token_leases(id, c)
exp_del(id, t)
redis.call('ZREM', ready_key(t), id)
redis.call('ZREM', K.cool, id)
-- A pipeline's token is replaced in its share.
if (t.pl or '') ~= '' then share_left(id, t, c) end
unschedule(id)
redis.call('ZREM', sunset_key(), id)
move_view(id, t.view, nil)
redis.call('HDEL', K.ids, token_id)
fp_del(id, t.fingerprint)
redis.call('DEL', tkey(id), seckey(id))
return reply({ leases_ended = ended })
