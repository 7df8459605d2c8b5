-- pipeline_put.lua: create or resize a pipeline (or start a dry run). Records the demand and the
-- size vault-core computed from it; the tokens are assigned or given back in batches by
-- pipeline_step.lua, which the caller then drives (and the janitor, if the caller stops).
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::PipelinePut` (vault-core), read here as locals of the same names.
-- Returns {"created","phase","want","have"} | {"err":"pool_not_found"|"conflict"|"invalid_request"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local key = pl_key(name)
local p = pipeline_load(name)
if p ~= nil and p.phase == 'failed' then
  redis.call('DEL', key)
  p = nil
end
local fields = { 'want', want, 'units', units, 'min_ttl_ms', min_life_ms, 'allow_partial',
  allow_partial and '1' or '0', 'demand', demand, 'updated_at', NOW, 'updated_by', actor,
  'cursor', '0', 'found', 0, 'result', '' }
if dry then
  -- A dry run scans like an assignment and counts; it has a record of its own (a name no
  -- pipeline can have) that lapses if its driver stops.
  redis.call('DEL', key)
  redis.call('HSET', key, 'phase', 'scan', 'dry', '1', 'prev_want', 0, unpack(fields))
  redis.call('PEXPIRE', key, 600000)
  return reply({ created = true, phase = 'scan', want = want, have = 0 })
end
local deadline = NOW + duration_ms
local have = 0
local created = p == nil
if created then
  if redis.call('ZCARD', pipelines_key()) >= max_pipelines then
    return fail('conflict', { detail = 'the pool has ' .. max_pipelines .. ' pipelines, the most it may have; end one first' })
  end
  redis.call('HSET', key, 'phase', 'scan', 'live', '0', 'prev_want', 0, 'created_at', NOW,
    'created_by', actor, 'granted', 0, 'units_granted', 0, unpack(fields))
else
  if p.phase ~= 'live' or p.ending == '1' then
    return fail('conflict', { detail = 'pipeline ' .. name .. ' is being ' .. (p.ending == '1' and 'ended' or 'assigned or resized') .. '; retry when it is done' })
  end
  have = share_size(name)
  local phase = 'live'
  if want > have then phase = 'scan' elseif want < have then phase = 'shrink' end
  redis.call('UNLINK', pc_key(name))
  redis.call('HSET', key, 'phase', phase, 'prev_want', p.want, unpack(fields))
end
redis.call('HSET', key, 'deadline', deadline)
redis.call('ZADD', pipelines_key(), deadline, name)
local now_p = pipeline_load(name)
if now_p.phase ~= 'live' then redis.call('SADD', plwork_key(), name) end
share_strength(now_p, have)
return reply({ created = created, phase = now_p.phase, want = want, have = have })
