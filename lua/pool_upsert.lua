-- pool_upsert.lua: create or replace a pool's config (PUT semantics; `frozen` is kept).
-- KEYS: the pool keys (see prelude).
-- ARGV[1] now ms or ""; ARGV[2] JSON object field -> string value, already validated.
-- Returns {"created":bool}. On update every token is re-placed under the new rules
-- (O(tokens), an operator action, not a hot path), and refresh due times follow a changed
-- refresh margin.
local fields = cjson.decode(ARGV[2])
local created = redis.call('EXISTS', K.cfg) == 0
for k, v in pairs(fields) do redis.call('HSET', K.cfg, k, v) end
if created then
  redis.call('HSET', K.cfg, 'frozen', '0', 'created_at', NOW)
else
  local c = load_cfg()
  for _, id in ipairs(redis.call('SMEMBERS', K.ids)) do
    local t = hgetall(tkey(id))
    if t ~= nil then
      if in_rotation(t) then due_add(id, t, c) end
      reconcile(id, t, c)
    end
  end
end
return reply({ created = created })
