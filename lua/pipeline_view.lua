-- pipeline_view.lua: pipelines as operators see them: each record, its share's size, and its
-- tokens by state, leases, quota left and life, read from up to `sample` of its tokens (scaled
-- to the whole share by vault-core when the share is larger). Reads only.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::PipelineView` (vault-core), read here as locals of the same names.
-- `names`: the pipelines to show (none: every one of the pool).
-- Returns a JSON list of {"name","record":{...},"have","under_strength","sampled","states":{},
-- "leases","units_left"(or absent: unlimited),"life_end"(ms; 0: a token never expires)}
-- | {"err":"pool_not_found"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
if #names == 0 then names = redis.call('ZRANGE', pipelines_key(), 0, -1) end
local all = quotas_of(c)
local out = {}
for _, name in ipairs(names) do
  local rec = hgetall(pl_key(name))
  if rec ~= nil and rec.dry ~= '1' and rec.phase ~= 'failed' then
    local e = { name = name, record = rec, have = share_size(name),
                under_strength = redis.call('SISMEMBER', plshort_key(), name) == 1,
                states = {}, leases = 0, sampled = 0, life_end = 0 }
    local ids = redis.call('SRANDMEMBER', pm_key(name), sample)
    local left, never = nil, false
    for _, id in ipairs(ids) do
      local t = load_token_hot(id)
      if t ~= nil then
        e.sampled = e.sampled + 1
        local v = t.view or t.state
        e.states[v] = (e.states[v] or 0) + 1
        e.leases = e.leases + num(t.leases, 0)
        local room = nil
        for k = 1, #all do
          local q = all[k]
          if q.cost == 'requests' then
            local r = room_of(t, q)
            if r ~= nil and (room == nil or r < room) then room = r end
          end
        end
        if room ~= nil then left = (left or 0) + math.max(0, room) end
        local at = num(t.expires_at, 0)
        if at <= 0 then never = true elseif at > e.life_end then e.life_end = at end
      end
    end
    if never then e.life_end = 0 end
    e.units_left = left
    if next(e.states) == nil then e.states = nil end
    out[#out + 1] = e
  end
end
if #out == 0 then return '[]' end
return reply(out)
