-- pipeline_end.lua: end a pipeline now: its tokens go back to the pool in batches
-- (pipeline_step.lua); leases still out keep their own deadlines.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::PipelineEnd` (vault-core), read here as locals of the same names.
-- Returns {"have"} | {"err":"pool_not_found"|"pipeline_not_found"}.
if load_cfg() == nil then return fail('pool_not_found') end
local p = pipeline_load(name)
if p == nil or p.dry == '1' or p.phase == 'failed' or p.ending == '1' then
  return fail('pipeline_not_found', { detail = 'no pipeline ' .. name .. ' in this pool' })
end
redis.call('UNLINK', pc_key(name))
redis.call('HSET', pl_key(name), 'phase', 'shrink', 'want', 0, 'ending', '1', 'result', '')
redis.call('SADD', plwork_key(), name)
redis.call('SREM', plshort_key(), name)
return reply({ have = share_size(name) })
