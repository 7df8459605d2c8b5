-- pool_complete.lua: give a pool written by an older vault the settings it lacks and the
-- config layout of this one (at start-up); what it has is rewritten with the same values.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::PoolComplete` (vault-core), read here as locals of the same names.
-- Returns {"completed":bool}: false when the pool is gone (deleted meanwhile: not recreated).
if redis.call('EXISTS', K.cfg) == 0 then return reply({ completed = false }) end
write_cfg(cjson.decode(fields))
return reply({ completed = true })
