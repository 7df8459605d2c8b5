-- pipeline_news.lua: take up to `max` of what happened to the pool's pipelines (`plnews`, oldest
-- first) for vault-core to announce.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::PipelineNews` (vault-core), read here as locals of the same names.
-- Returns a JSON list of entries {"type","pipeline","at",...}.
local items = redis.call('LRANGE', plnews_key(), 0, max - 1)
if #items > 0 then redis.call('LTRIM', plnews_key(), #items, -1) end
return '[' .. table.concat(items, ',') .. ']'
