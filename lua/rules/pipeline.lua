-- pipeline.lua: the share rule — a pipeline is a named, sized, time-bounded share of one pool. A
-- token assigned to it (its `pl` field, one pipeline at most) sits in the pipeline's `pr:` set
-- instead of the pool's `ready`, so only leases that name the pipeline get it; while the
-- pipeline lives its share is kept whole: a token that leaves rotation leaves the share and is
-- replaced from the free part of the pool at once (or, when none is free, the pipeline is under
-- strength until the janitor finds one).
--
-- A pipeline's record (`pl:<name>`): want (tokens it should hold), prev_want (what it held
-- before the resize in progress: a failed resize goes back to it), phase, live ('1' once its
-- share was complete: it leases), deadline, the demand it was sized from, and the counters of
-- what it leased. Phases, each worked in batches by pipeline_step.lua:
--   scan    the pool's free `ready` set is scanned for candidates (`pc:`, by preference);
--   assign  candidates are assigned, best first, each checked again;
--   live    complete (or under strength, topped up by the janitor);
--   shrink  tokens go back to the pool until it holds `want` (0: it is ending, then gone).
-- A dry run (`dry`) is a record of its own that only scans and counts.

-- The pipeline fields the rules read.
local PIPELINE_FIELDS = { 'phase', 'want', 'prev_want', 'live', 'deadline', 'units',
  'min_ttl_ms', 'allow_partial', 'dry', 'cursor', 'found', 'ending', 'result' }

local function pipeline_load(name)
  local raw = redis.call('HMGET', pl_key(name), unpack(PIPELINE_FIELDS))
  if not raw[1] then return nil end
  local p = { name = name }
  for i = 1, #PIPELINE_FIELDS do
    if raw[i] then p[PIPELINE_FIELDS[i]] = raw[i] end
  end
  return p
end

-- How many entries of the pool's `ready` a refill looks at beyond the tokens it wants.
local FILL_LOOK = 16

local function share_size(name) return redis.call('SCARD', pm_key(name)) end

-- Whether a lease of pipeline `name` ("" = the free part of the pool) may take token `t`.
local function in_share(t, name)
  return (t.pl or '') == (name or '')
end

-- What happened to a share, for vault-core to announce (events, audit): bounded, oldest dropped.
local PLNEWS_MAX = 10000
local function share_news(e)
  e.at = NOW
  redis.call('RPUSH', plnews_key(), cjson.encode(e))
  redis.call('LTRIM', plnews_key(), -PLNEWS_MAX, -1)
end

-- Is free token `id` one pipeline `p` can take now: idle (no lease of the free part of the
-- pool is out on it: a token is never leased through two shares at once), in the free `ready`
-- set, and eligible for a lease of the pipeline's units with its life margin.
local function share_candidate(id, t, c, p)
  return t ~= nil and (t.pl or '') == '' and t.at == 'r' and num(t.leases, 0) == 0
    and eligible(id, t, c, num(p.units, 1), nil, num(p.min_ttl_ms, 0))
end

-- Assign free token `id` to pipeline `name`.
local function share_join(id, t, c, name)
  redis.call('ZREM', K.ready, id)
  stage(t, { 'pl', name, 'at', 'n' })
  redis.call('SADD', pm_key(name), id)
  reconcile(id, t, c)
end

-- Give token `id` of a pipeline back to the pool (the caller has taken it out of `pm:`).
local function share_return(id, t, c)
  if t.at == 'r' then redis.call('ZREM', ready_key(t), id) end
  stage(t, { 'pl', '', 'at', 'n' })
  reconcile(id, t, c)
end

-- Under strength: a live pipeline holding fewer tokens than it wants. Announced when it starts.
local function share_strength(p, have)
  if p.phase == 'live' and have < num(p.want, 0) then
    if redis.call('SADD', plshort_key(), p.name) == 1 then
      share_news({ type = 'pipeline.under_strength', pipeline = p.name,
                   reason = have .. ' of ' .. p.want .. ' tokens' })
    end
  elseif redis.call('SREM', plshort_key(), p.name) == 1 and p.phase == 'live' then
    share_news({ type = 'pipeline.at_strength', pipeline = p.name })
  end
end

-- Assign up to `max` free tokens to live pipeline `p`, the first eligible ones of the pool's
-- `ready` (a bounded look, as acquire's). Returns the user's ids of those assigned.
local function share_fill(p, c, max)
  local got = {}
  if max <= 0 then return got end
  local ids = redis.call('ZRANGE', K.ready, 0, FILL_LOOK + max - 1)
  for _, id in ipairs(ids) do
    if #got >= max then break end
    local t = load_token_hot(id)
    if share_candidate(id, t, c, p) then
      share_join(id, t, c, p.name)
      got[#got + 1] = t.id
    end
  end
  return got
end

-- Token `id` of pipeline `t.pl` left rotation (revoked, quarantined, expired, refreshing): it
-- leaves the share, and a free token takes its place when one is eligible.
share_left = function(id, t, c)
  local name = t.pl
  redis.call('SREM', pm_key(name), id)
  put(id, t, 'pl', '')
  local p = pipeline_load(name)
  if p == nil or p.phase ~= 'live' then return end
  local by = share_fill(p, c, 1)
  share_news({ type = 'pipeline.token_replaced', pipeline = name, token_id = t.id,
               replaced_by = by[1], reason = t.state })
  share_strength(p, share_size(name))
end

-- The refusal of a lease naming pipeline `name`, or nil when it may lease.
local function share_closed(name)
  local p = pipeline_load(name)
  if p == nil or p.dry == '1' or p.phase == 'failed' then
    return fail('pipeline_not_found', { detail = 'no pipeline ' .. name .. ' in this pool' })
  end
  if p.live ~= '1' then
    return fail('pipeline_not_ready', { detail = 'pipeline ' .. name .. ' is still being assigned; retry when it is complete' })
  end
  if p.ending == '1' or num(p.deadline, 0) <= NOW then
    return fail('pipeline_not_found', { detail = 'pipeline ' .. name .. ' has ended' })
  end
  return nil
end

-- Counts what pipeline `name` leased (its observed rate).
local function share_count(name, units)
  redis.call('HINCRBY', pl_key(name), 'granted', 1)
  redis.call('HINCRBY', pl_key(name), 'units_granted', units)
end

-- When the next tokens free up in the pool: the first cooldown or lease end, or the first
-- other pipeline's deadline (nil: nothing is due).
local function next_free_at()
  local best = nil
  for _, key in ipairs({ K.cool, K.leases, pipelines_key() }) do
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if #first > 0 and (best == nil or tonumber(first[2]) < best) then best = tonumber(first[2]) end
  end
  if best ~= nil and best < NOW then best = NOW end
  return best
end

-- Delete the keys of pipeline `name` (it holds no token any more).
local function share_drop(name)
  redis.call('UNLINK', pm_key(name), pr_key(name), pc_key(name))
  redis.call('ZREM', pipelines_key(), name)
  redis.call('SREM', plshort_key(), name)
  redis.call('SREM', plwork_key(), name)
end
