-- global/append.lua: one global action on the global Redis primary (EVAL, not the pool
-- function library: the global Redis holds no pools). Appends the entry to the global log and
-- sets the global state it changes, in one step, so the two never disagree.
-- KEYS[1] the log (stream), KEYS[2] the state key the action changes.
-- ARGV: entry JSON, kind, state field, score (client revocations), log cap.
-- Returns the entry id (its ms part is the global time of the action).
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*', 'e', ARGV[1])
local kind = ARGV[2]
if kind == 'credential.revoke' or kind == 'pool.freeze' then
  redis.call('HSET', KEYS[2], ARGV[3], id)
elseif kind == 'pool.unfreeze' then
  redis.call('HDEL', KEYS[2], ARGV[3])
elseif kind == 'client.revoke' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
  local t = redis.call('TIME')
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', t[1])
end
return id
