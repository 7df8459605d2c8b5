-- placement.lua: where a token belongs after any change — ready, cooling (cooldowns and spent
-- quota) or neither — and its view state.

-- Deprecated tokens stay leasable but sort after every active one.
local DEPRECATED_OFFSET = 100000000000000

local function set_view(id, t, view)
  if t.view ~= view then
    if t.view ~= nil and t.view ~= '' then redis.call('SREM', vkey(t.view), id) end
    redis.call('SADD', vkey(view), id)
    put(id, t, 'view', view)
  end
end

local function ready_score(t, c)
  local s
  if c.strategy == 'pack' then s = num(t.seq, 0) else s = num(t.last_leased_at, 0) end
  if t.state == 'deprecated' then s = s + DEPRECATED_OFFSET end
  return s
end

local function in_rotation(t) return t.state == 'active' or t.state == 'deprecated' end

-- The one place that decides where a token belongs (ready / cool / neither) and its view state.
-- Called after every change to a token.
local function reconcile(id, t, c)
  local view = t.state
  if in_rotation(t) then
    roll_window(id, t)
    local leases = num(t.leases, 0)
    local back_at = num(t.cool_until, 0)
    if back_at <= NOW then back_at = 0 end
    local room = headroom(t, c)
    if room ~= nil and room <= 0 then
      local we = num(t.win_end, 0)
      if we <= NOW then we = NOW + window_ms(c) end
      if we > back_at then back_at = we end
    end
    if back_at > NOW then
      redis.call('ZREM', K.ready, id)
      redis.call('ZADD', K.cool, back_at, id)
      if t.state == 'active' then
        if leases > 0 then view = 'leased' else view = 'cooling' end
      end
    else
      redis.call('ZREM', K.cool, id)
      if leases >= max_leases(c) then
        redis.call('ZREM', K.ready, id)
      else
        redis.call('ZADD', K.ready, ready_score(t, c), id)
      end
      if t.state == 'active' and leases > 0 then view = 'leased' end
    end
  else
    redis.call('ZREM', K.ready, id)
    redis.call('ZREM', K.cool, id)
  end
  set_view(id, t, view)
end
