-- placement.lua: where a token belongs after any change — ready (the pool's, or its pipeline's),
-- cooling (cooldowns and spent quota) or neither — and its view state.

-- Deprecated tokens stay leasable but sort after every active one.
local DEPRECATED_OFFSET = 100000000000000

-- A token of view state `view` is in the set of that view, and, for the two views that refine
-- `active` (`leased`, `cooling`), in `active` too. So a lease moves a token in one set
-- (`leased`), not two; `active` alone is counted as active - leased - cooling
-- (`view_counts` in vault-core's store). Moves token `id` from the sets of view `from` to those
-- of `to` (nil: none), touching only the sets that differ.
local function move_view(id, from, to)
  if from == to then return end
  local from_sub = from == 'leased' or from == 'cooling'
  local to_sub = to == 'leased' or to == 'cooling'
  local from_base, to_base = from, to
  if from_sub then from_base = 'active' end
  if to_sub then to_base = 'active' end
  if from_sub then redis.call('SREM', vkey(from), id) end
  if from_base ~= nil and from_base ~= '' and from_base ~= to_base then
    redis.call('SREM', vkey(from_base), id)
  end
  if to_base ~= nil and to_base ~= from_base then redis.call('SADD', vkey(to_base), id) end
  if to_sub then redis.call('SADD', vkey(to), id) end
end

local function ready_score(id, t, c)
  local s
  if c.strategy == 'pack' then s = deposit_seq(id) else s = num(t.last_leased_at, 0) end
  if t.state == 'deprecated' then s = s + DEPRECATED_OFFSET end
  return s
end

-- Every view state, a view set each (`leased` and `cooling` refine `active`). vault-core's
-- `VIEW_STATES` is held equal to this list by a test.
local VIEW_STATES = { 'active', 'leased', 'cooling', 'refreshing', 'quarantined', 'deprecated', 'revoked', 'expired' }

-- The in-rotation rule: the states a token is leased from. vault-core's `ROTATION_STATES` is
-- held equal to it by a test.
local function in_rotation(t) return t.state == 'active' or t.state == 'deprecated' end

-- The one place that decides where a token belongs (ready / cool / neither) and its view state.
-- Called after every change to a token. The token's `at` field says where it is ('r' ready,
-- 'c' cool, 'n' neither; absent: not known, e.g. a reconfigured pool), so an index entry that
-- is already right is not written again: a lease on a token that stays in `ready` rewrites its
-- score only when the score changed.
local function reconcile(id, t, c)
  local view = t.state
  local where, back_at = 'n', 0
  if in_rotation(t) then
    roll_window(id, t, c)
    local leases = num(t.leases, 0)
    back_at = num(t.cool_until, 0)
    if back_at <= NOW then back_at = 0 end
    local spent_until, binding = quota_back_at(t, c)
    if spent_until ~= nil and spent_until > back_at then
      back_at = spent_until
      if t.at ~= 'c' then count_binding(binding) end
    end
    if back_at > NOW then
      where = 'c'
      if t.state == 'active' then
        if leases > 0 then view = 'leased' else view = 'cooling' end
      end
    else
      if leases < max_leases(c) then where = 'r' end
      if t.state == 'active' and leases > 0 then view = 'leased' end
    end
  end
  local was = t.at
  local rk = ready_key(t)
  if where == 'r' then
    local score = ready_score(id, t, c)
    if was ~= 'r' or score ~= ready_score(id, { last_leased_at = t._lla0, state = t._state0 }, c) then
      redis.call('ZADD', rk, score, id)
    end
  elseif was == 'r' or was == nil then
    redis.call('ZREM', rk, id)
  end
  if where == 'c' then
    redis.call('ZADD', K.cool, back_at, id)
  elseif was == 'c' or was == nil then
    redis.call('ZREM', K.cool, id)
  end
  -- What its ready score is made of now, for the next reconcile of this call.
  loaded(t)
  -- Where it is and its view state, in one write with what the transition staged.
  local fv = {}
  local pending = rawget(t, '_pending')
  if pending ~= nil then
    rawset(t, '_pending', nil)
    for _, f in ipairs(pending) do
      fv[#fv + 1] = f
      fv[#fv + 1] = rawget(t, f)
    end
  end
  if was ~= where then fv[#fv + 1] = 'at'; fv[#fv + 1] = where end
  if t.view ~= view then
    move_view(id, t.view, view)
    fv[#fv + 1] = 'view'; fv[#fv + 1] = view
  end
  if #fv > 0 then put_all(id, t, fv) end
  -- A pipeline's token that left rotation leaves its share (which is refilled).
  if t.pl ~= nil and t.pl ~= '' and not in_rotation(t) then share_left(id, t, c) end
end
