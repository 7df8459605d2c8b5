-- pipeline_step.lua: one batch of work on a pipeline, whatever it needs now (rules/pipeline.lua
-- has the phases): scan up to `batch` free tokens for candidates, assign up to `batch` of them,
-- give up to `batch` back, top up a live share under strength, or end it at its deadline. Any
-- number of drivers may call it (the vault that created it, every janitor): each batch goes on
-- where the last ended.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::PipelineStep` (vault-core), read here as locals of the same names.
-- Returns {"phase","want","have","done"} and, when the last assignment or resize fell short
-- (and was given back), "short": {"could","missing","next_free_at"}. Phase "gone" once it has
-- ended, "failed" for a new pipeline that could not be assigned (its record stays a minute),
-- "dry_run" at the end of a dry run. | {"err":"pool_not_found"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
-- Candidates kept beyond those needed, for tokens leased or assigned elsewhere meanwhile.
local SPARE_CANDIDATES = 1000
local key = pl_key(name)
local p = pipeline_load(name)
if p == nil then return reply({ phase = 'gone', done = true, want = 0, have = 0 }) end
local want = num(p.want, 0)
local have = share_size(name)
local need = want - have

-- An answer, with what fell short when the last assignment did.
local function answer(phase, done)
  local out = { phase = phase, done = done, want = want, have = have }
  if p.result == 'insufficient' then
    out.short = { could = num(p.could, 0), missing = num(p.missing, 0), next_free_at = next_free_at() }
  end
  return reply(out)
end

-- The assignment in progress falls short (`found` candidates for `asked` tokens): back to the
-- size the pipeline had before it (a new one: none, and gone).
local function fall_short(found, asked)
  p.could, p.missing, p.result = math.max(0, math.min(found, asked)), math.max(0, asked - found), 'insufficient'
  want = num(p.prev_want, 0)
  redis.call('UNLINK', pc_key(name))
  redis.call('HSET', key, 'want', want, 'result', p.result, 'could', p.could, 'missing', p.missing,
    'phase', 'shrink')
  p.phase = 'shrink'
end

-- Leave the work set: live at the size it has.
local function go_live()
  redis.call('HSET', key, 'phase', 'live', 'live', '1')
  redis.call('SREM', plwork_key(), name)
  if p.live ~= '1' then redis.call('HSET', key, 'live_since', NOW) end
  p.phase, p.live = 'live', '1'
  share_strength(p, have)
end

if p.phase == 'failed' then return answer('failed', true) end

if p.phase == 'live' then
  if num(p.deadline, 0) <= NOW then
    redis.call('HSET', key, 'phase', 'shrink', 'want', 0, 'ending', '1')
    redis.call('SADD', plwork_key(), name)
    share_news({ type = 'pipeline.ended', pipeline = name, reason = 'deadline' })
    p.phase = 'shrink'
    share_strength(p, have)
    want = 0
    return answer('shrink', false)
  end
  if need > 0 then
    have = have + #share_fill(p, c, math.min(batch, need))
    share_strength(p, have)
  end
  return answer('live', true)
end

if p.phase == 'scan' then
  local res = redis.call('ZSCAN', K.ready, p.cursor or '0', 'COUNT', batch)
  local cursor, found = res[1], num(p.found, 0)
  local pc = pc_key(name)
  local life = math.max(1, num(p.deadline, NOW) - NOW)
  for i = 1, #res[2], 2 do
    local id = res[2][i]
    local t = load_token_hot(id)
    if share_candidate(id, t, c, p) then
      if p.dry == '1' then
        found = found + 1
      else
        -- Preference: quota headroom (0..1) plus life left over the pipeline's lifetime (0..1).
        local at, left = num(t.expires_at, 0), 1
        if at > 0 then left = math.min(1, math.max(0, at - NOW) / life) end
        redis.call('ZADD', pc, quota_headroom(t, c) + left, id)
      end
    end
  end
  if p.dry ~= '1' then
    -- Only the best `need` (and some spare, for tokens taken meanwhile) are kept.
    local keep = math.max(need, 0) + math.min(math.max(need, 0), SPARE_CANDIDATES)
    local n = redis.call('ZCARD', pc)
    if n > keep then redis.call('ZREMRANGEBYRANK', pc, 0, n - keep - 1) end
    found = redis.call('ZCARD', pc)
  end
  if cursor ~= '0' then
    redis.call('HSET', key, 'cursor', cursor, 'found', found)
    return answer('scan', false)
  end
  redis.call('HSET', key, 'found', found)
  if p.dry == '1' then
    redis.call('DEL', key)
    if found < need then p.could, p.missing, p.result = found, need - found, 'insufficient' end
    return answer('dry_run', true)
  end
  if found >= need or (p.allow_partial == '1' and found > 0) then
    redis.call('HSET', key, 'phase', 'assign')
    return answer('assign', false)
  end
  fall_short(found, need)
end

if p.phase == 'assign' then
  local pc = pc_key(name)
  if need > 0 then
    local popped = redis.call('ZPOPMAX', pc, math.min(batch, need))
    for i = 1, #popped, 2 do
      local id = popped[i]
      local t = load_token_hot(id)
      if share_candidate(id, t, c, p) then
        share_join(id, t, c, name)
        have = have + 1
      end
    end
    need = want - have
    if need > 0 and redis.call('ZCARD', pc) > 0 then return answer('assign', false) end
  end
  redis.call('UNLINK', pc)
  if need <= 0 or p.allow_partial == '1' then
    go_live()
    return answer('live', true)
  end
  -- Candidates were taken meanwhile: this assignment falls short; what it assigned goes back.
  local asked = want - num(p.prev_want, 0)
  fall_short(asked - need, asked)
end

-- shrink: give tokens back until the share holds `want`.
if have > want then
  for _, id in ipairs(redis.call('SPOP', pm_key(name), math.min(batch, have - want))) do
    local t = load_token_hot(id)
    if t ~= nil then share_return(id, t, c) end
  end
  have = share_size(name)
  if have > want then return answer('shrink', false) end
end
if want > 0 or (p.live == '1' and p.ending ~= '1') then
  go_live()
  return answer('live', true)
end
share_drop(name)
if p.result == 'insufficient' then
  -- A pipeline that never lived: its record says why for a minute.
  redis.call('HSET', key, 'phase', 'failed')
  redis.call('PEXPIRE', key, 60000)
  return answer('failed', true)
end
redis.call('DEL', key)
return answer('gone', true)
