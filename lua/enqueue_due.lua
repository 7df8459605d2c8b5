-- enqueue_due.lua: move tokens whose preemptive refresh is due into their job queue.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::EnqueueDue` (vault-core), read here as locals of the same names.
-- Returns {"enqueued":n}. Tokens stay in rotation while the refresh runs.
local c = load_cfg()
if c == nil then return reply({ enqueued = 0 }) end
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', due_key(), '-inf', NOW, 'LIMIT', 0, batch)) do
  redis.call('ZREM', due_key(), id)
  local t = load_token(id)
  if t ~= nil and in_rotation(t) and refreshable(t) then
    enqueue_job(id, t)
    n = n + 1
  end
end
return reply({ enqueued = n })
