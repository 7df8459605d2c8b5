-- quota.lua: the quota rule — every quota of the pool holds per token: a lease is granted only
-- when each quota has room for what it asks, its reservation is held while it lives, and what
-- was used is settled when it ends; a token with a spent quota cools until that quota allows.
--
-- A pool's quotas: `default`, the one-quota shorthand (quota_limit, quota_window_s,
-- quota_reserve; its window starts at first use, it counts requests, and a token's own
-- quota_limit overrides its limit), then those of the config's `quotas` (JSON written by
-- vault-core: {name, limit, window_s, kind, anchor_ms, reserve, cost, buckets}).
--
-- Window kinds:
--   from_first_use  the window starts at the first reservation after the last one ended;
--   clock_aligned   windows are [anchor + k·window, anchor + (k+1)·window): UTC midnight for a
--                   daily window with anchor 0;
--   sliding         the last `window` ms, counted in `buckets` sub-buckets of window/buckets ms.
--                   A use is counted in the bucket of the moment its lease ended, and the count
--                   covers the current bucket and the `buckets` before it: between one window and
--                   one window plus a bucket. So it never counts less than the target's rolling
--                   window (never lets a token past its limit) and holds back at most one
--                   bucket's worth of uses too long.
-- Token fields: `default` uses used / win_end (as pools with one quota always have); quota q
-- uses `u:q` (used) and `w:q` (its window's end), or for a sliding quota `s:q`: "<first bucket
-- number> <count> <count> ..." (consecutive buckets; bounded by `buckets` + 1 counts). What live
-- leases reserve is kept once per cost dimension, whichever quotas count it: `reserved` for
-- requests, `r:<dimension>` for a cost.

-- The loops over a pool's quotas below are numeric: `ipairs` costs a C call a step, and these
-- run several times on every lease.

-- Parsed quota lists, by the config values they were made from (kept across calls: a lease
-- then parses nothing). Keyed by the config's own strings, which Lua interns, so a lookup
-- compares pointers; a config that changes misses and is parsed again. Bounded: emptied when
-- it holds more than QUOTA_CACHE_MAX lists.
local QUOTA_CACHE, QUOTA_CACHE_SIZE, QUOTA_CACHE_MAX = {}, 0, 256

-- Where a token keeps what live leases reserve of `cost`: the `default` quota's `reserved` for
-- requests (whichever quotas count them).
local function reserved_field(cost)
  if cost == 'requests' then return 'reserved' end
  return 'r:' .. cost
end

-- The pool's quota list, its cost estimates (nil: none) and its cost dimensions (each
-- {cost, fr}: what a lease reserves, once per dimension).
local function parse_quotas(c)
  local qs = { { name = 'default', limit = tonumber(c.quota_limit or ''),
           window_ms = setting(c, 'quota_window_s') * 1000, kind = 'from_first_use', anchor = 0,
           reserve = setting(c, 'quota_reserve'), cost = 'requests',
           fu = 'used', fr = 'reserved', fw = 'win_end' } }
  local dims = { { cost = 'requests', fr = qs[1].fr } }
  if c.quotas ~= nil and c.quotas ~= '' then
    -- Beside other quotas, an unlimited `default` counts nothing (fewer fields per token),
    -- unless a token has a limit of its own.
    qs[1].optional = qs[1].limit == nil
    for _, q in ipairs(cjson.decode(c.quotas)) do
      local e = { name = q.name, limit = q.limit, window_ms = q.window_s * 1000, kind = q.kind,
                  anchor = q.anchor_ms or 0, reserve = q.reserve or 0, cost = q.cost,
                  fu = 'u:' .. q.name, fr = reserved_field(q.cost), fw = 'w:' .. q.name,
                  sync = q.sync }
      if q.kind == 'sliding' then
        e.buckets = q.buckets
        e.bucket_ms = math.ceil(e.window_ms / q.buckets)
        e.fu, e.fw = 's:' .. q.name, nil
        -- This call's sum of the counts, with the field value it was made from.
        e.memo_v, e.memo_sum = '_sv:' .. q.name, '_ss:' .. q.name
      end
      qs[#qs + 1] = e
      local known = false
      for k = 1, #dims do
        local d = dims[k]
        if d.cost == q.cost then known = true end
      end
      if not known then dims[#dims + 1] = { cost = q.cost, fr = e.fr } end
    end
  end
  local estimates = nil
  if c.cost_estimates ~= nil and c.cost_estimates ~= '' then estimates = cjson.decode(c.cost_estimates) end
  return qs, estimates, dims
end

-- The pool's quotas (`default` first) and its cost estimates (nil: none). Kept in the config
-- table for the rest of the call (the rule asks for them several times a lease).
local function quotas_of(c)
  local m = c._q
  if m ~= nil then return m.list, m.estimates, m.dims end
  local by_limit = QUOTA_CACHE[c.quotas or '']
  local e = by_limit and by_limit[c.quota_limit or '']
  if e ~= nil and e.w == c.quota_window_s and e.r == c.quota_reserve and e.e == c.cost_estimates then
    c._q = e
    return e.list, e.estimates, e.dims
  end
  local list, estimates, dims = parse_quotas(c)
  if QUOTA_CACHE_SIZE >= QUOTA_CACHE_MAX then QUOTA_CACHE, QUOTA_CACHE_SIZE = {}, 0 end
  by_limit = QUOTA_CACHE[c.quotas or '']
  if by_limit == nil then
    by_limit = {}
    QUOTA_CACHE[c.quotas or ''] = by_limit
  end
  e = { w = c.quota_window_s, r = c.quota_reserve, e = c.cost_estimates,
        list = list, estimates = estimates, dims = dims }
  by_limit[c.quota_limit or ''] = e
  c._q = e
  QUOTA_CACHE_SIZE = QUOTA_CACHE_SIZE + 1
  return list, estimates, dims
end

quota_fields_of = function(c)
  local qs, _, dims = quotas_of(c)
  local f = {}
  for i, q in ipairs(qs) do
    if i > 1 then
      f[#f + 1] = q.fu
      if q.fw then f[#f + 1] = q.fw end
    end
  end
  for i, d in ipairs(dims) do
    if i > 1 then f[#f + 1] = d.fr end
  end
  return f
end

-- The `default` quota's window (a 429 without a reset time cools a token this long).
local function window_ms(c) return setting(c, 'quota_window_s') * 1000 end

local function limit_of(t, q)
  if q.name == 'default' and t.quota_limit ~= nil and t.quota_limit ~= '' then
    return tonumber(t.quota_limit)
  end
  return q.limit
end

-- Sliding counts: the bucket numbers and counts of field value `v`, the current bucket, and the
-- oldest bucket still counted.
local function sliding_read(v, q)
  local cur = math.floor(NOW / q.bucket_ms)
  local first, counts = nil, {}
  if v ~= nil and v ~= '' then
    for n in string.gmatch(v, '%d+') do
      if first == nil then first = tonumber(n) else counts[#counts + 1] = tonumber(n) end
    end
  end
  return first or cur, counts, cur, cur - q.buckets
end

local function sliding_sum(v, q)
  local first, counts, _, oldest = sliding_read(v, q)
  local sum = 0
  for i, n in ipairs(counts) do
    if first + i - 1 >= oldest then sum = sum + n end
  end
  return sum
end

-- Field value `v` with `n` more uses in the current bucket (and no bucket too old to count).
local function sliding_add(v, q, n)
  local first, counts, cur, oldest = sliding_read(v, q)
  local out = {}
  local start = math.max(first, oldest)
  for b = start, cur do
    local i = b - first + 1
    local k = counts[i] or 0
    if b == cur then k = k + n end
    out[#out + 1] = str(k)
  end
  -- Leading empty buckets carry nothing.
  while #out > 1 and out[1] == '0' do
    table.remove(out, 1)
    start = start + 1
  end
  return str(start) .. ' ' .. table.concat(out, ' ')
end

-- When the oldest counted use of a sliding quota stops counting (nil: none counted).
local function sliding_relief(v, q)
  local first, counts, _, oldest = sliding_read(v, q)
  for i, n in ipairs(counts) do
    local b = first + i - 1
    if b >= oldest and n > 0 then return (b + q.buckets + 1) * q.bucket_ms end
  end
  return nil
end

-- When the window that starts now (or the current clock window) ends.
local function window_end(q)
  if q.kind == 'clock_aligned' then
    return q.anchor + (math.floor((NOW - q.anchor) / q.window_ms) + 1) * q.window_ms
  end
  return NOW + q.window_ms
end

-- Units of quota `q` used in its live window.
local function used_of(t, q)
  if q.kind == 'sliding' then
    local v = t[q.fu]
    if v ~= nil and rawget(t, q.memo_v) == v then return rawget(t, q.memo_sum) end
    local sum = sliding_sum(v, q)
    if v ~= nil then
      rawset(t, q.memo_v, v)
      rawset(t, q.memo_sum, sum)
    end
    return sum
  end
  local we = num(t[q.fw], 0)
  if we > 0 and NOW >= we then return 0 end
  return num(t[q.fu], 0)
end

-- Units of quota `q` still grantable on token `t`, or nil when it has no limit.
local function room_of(t, q)
  local lim = limit_of(t, q)
  if lim == nil then return nil end
  return lim - q.reserve - used_of(t, q) - num(t[q.fr], 0)
end

-- What a lease reserves: `units` requests and `costs` (dimension -> units, the lease's estimate
-- or the pool's `cost_estimates`), nil when the pool counts no cost. Resolved once, at acquire;
-- the lease keeps it.
local function lease_costs(c, given)
  local _, estimates = quotas_of(c)
  if estimates == nil then return given end
  local costs = {}
  for k, v in pairs(estimates) do costs[k] = v end
  for k, v in pairs(given or {}) do costs[k] = v end
  return costs
end

-- What a lease of `units` requests and `costs` takes of quota `q`.
local function amount(q, units, costs)
  if q.cost == 'requests' then return units end
  return (costs and costs[q.cost]) or 0
end

-- The encoded error for `costs` (a lease's or a report's) naming a dimension no quota of the
-- pool counts, or nil.
local function costs_error(c, costs)
  if costs == nil then return nil end
  local all = quotas_of(c)
  for dim in pairs(costs) do
    local counted = false
    for k = 1, #all do
      if all[k].cost == dim then counted = true end
    end
    if not counted then
      return fail('invalid_request', { detail = 'costs.' .. dim .. ': no quota of this pool counts it' })
    end
  end
  return nil
end

-- The first quota without room for `units` requests and `costs`, and its room (nil when every
-- quota has room). A quota with no room at all refuses even a lease that asks nothing of it.
-- `only`: look only at the quotas counting that dimension.
local function quota_short(t, c, units, costs, only)
  local all = quotas_of(c)
  for k = 1, #all do
    local q = all[k]
    if only == nil or q.cost == only then
      local room = room_of(t, q)
      if room ~= nil and (room <= 0 or room < amount(q, units, costs)) then return q, room end
    end
  end
  return nil
end

-- Counts, per quota, how often it stood between a token and a lease (pool status names the one
-- that binds most often): a lease refused for it, or a token it sent cooling.
local function count_binding(q)
  redis.call('HINCRBY', stats_key(), 'binds:' .. q.name, 1)
end

-- When every spent quota of token `t` allows a lease again, and the quota that keeps it out
-- longest: nil when none is spent.
local function quota_back_at(t, c)
  local back, binding = nil, nil
  local all = quotas_of(c)
  for k = 1, #all do
    local q = all[k]
    local room = room_of(t, q)
    if room ~= nil and room <= 0 then
      local at
      if q.kind == 'sliding' then
        at = sliding_relief(t[q.fu], q) or (NOW + q.bucket_ms)
      else
        at = num(t[q.fw], 0)
        if at <= NOW then at = window_end(q) end
      end
      if back == nil or at > back then back, binding = at, q end
    end
  end
  return back, binding
end

-- Whether token `t` keeps counts for quota `q`.
local function counted(t, q)
  return not q.optional or (t.quota_limit ~= nil and t.quota_limit ~= '')
end

-- A window that is over counts nothing: recorded at the token's next transition.
local function roll_window(id, t, c)
  local all = quotas_of(c)
  for k = 1, #all do
    local q = all[k]
    if q.kind ~= 'sliding' then
      local we = num(t[q.fw], 0)
      if we > 0 and NOW >= we then put_all(id, t, { q.fu, 0, q.fw, 0 }) end
    end
  end
end

-- Reserve `units` requests and `costs` on every quota of token `t`: appended to `fv` (field,
-- value, ...). A fixed window starts with its first reservation.
local function quota_reserve(t, c, units, costs, fv)
  local qs, _, dims = quotas_of(c)
  for k = 1, #qs do
    local q = qs[k]
    if q.fw ~= nil and num(t[q.fw], 0) == 0 and counted(t, q) then
      fv[#fv + 1] = q.fw; fv[#fv + 1] = window_end(q)
    end
  end
  for k = 1, #dims do
    local d = dims[k]
    local n = amount(d, units, costs)
    if n ~= 0 then
      fv[#fv + 1] = d.fr; fv[#fv + 1] = num(t[d.fr], 0) + n
    end
  end
end

-- Change the `requests` reservation of token `t` by `delta` (a renew changing its units).
local function quota_rereserve(t, c, delta, fv)
  local f = quotas_of(c)[1].fr
  fv[#fv + 1] = f; fv[#fv + 1] = math.max(0, num(t[f], 0) + delta)
end

-- Settle a lease that reserved `units` requests and `costs`: each reservation is given back and
-- what was used is counted (`used_units` requests, never more than reserved, and `used_costs`
-- by dimension; what is not reported counts its whole reservation). Appended to `fv`.
local function quota_settle(t, c, units, costs, used_units, used_costs, fv)
  local qs, _, dims = quotas_of(c)
  for k = 1, #dims do
    local d = dims[k]
    local reserved = amount(d, units, costs)
    if reserved ~= 0 then
      fv[#fv + 1] = d.fr; fv[#fv + 1] = math.max(0, num(t[d.fr], 0) - reserved)
    end
  end
  for k = 1, #qs do
    local q = qs[k]
    local reserved = amount(q, units, costs)
    local u
    if q.cost == 'requests' then
      u = used_units
      if u ~= nil and u > units then u = units end
    else
      u = used_costs and used_costs[q.cost]
    end
    if u == nil then u = reserved end
    if u ~= 0 and counted(t, q) then
      fv[#fv + 1] = q.fu
      if q.kind == 'sliding' then
        fv[#fv + 1] = sliding_add(t[q.fu], q, u)
      else
        fv[#fv + 1] = num(t[q.fu], 0) + u
        if q.kind == 'clock_aligned' and num(t[q.fw], 0) == 0 then
          fv[#fv + 1] = q.fw; fv[#fv + 1] = window_end(q)
        end
      end
    end
  end
end

-- Every window of token `t` starts over (an operator's restore).
local function quota_reset(t, c, fv)
  local all = quotas_of(c)
  for k = 1, #all do
    local q = all[k]
    fv[#fv + 1] = q.fu; fv[#fv + 1] = q.kind == 'sliding' and '' or 0
    if q.fw ~= nil then fv[#fv + 1] = q.fw; fv[#fv + 1] = 0 end
  end
end

-- A target's reset time, bounded like a Retry-After: a time more than 31 days ahead counts
-- as 31 days, so that no report parks a token for years.
local MAX_TARGET_RESET_MS = 31 * 86400 * 1000
local function target_reset(reset_at)
  if reset_at == nil then return nil end
  return math.min(reset_at, NOW + MAX_TARGET_RESET_MS)
end

-- What a target said of a quota in its answer to a leased call: `remaining` units until
-- `reset_at` (ms). Its count can only raise the vault's, never lower it: reports of leases
-- sharing a token arrive out of order, and an older answer's `remaining` is higher than the
-- truth by every call made since (so trusting it would let the token past its quota). For the
-- `default` quota the target's reset time becomes the window's end (the target knows its own
-- window); a spent quota of another kind cools the token until then.
local function count_target_quota(id, t, c, q, remaining, reset_at)
  reset_at = target_reset(reset_at)
  if q.name == 'default' and reset_at ~= nil and reset_at > NOW then
    put(id, t, 'win_end', reset_at)
  end
  if remaining == nil then return end
  local lim = limit_of(t, q)
  if lim ~= nil then
    local floor = lim - remaining - used_of(t, q)
    if floor > 0 then
      if q.kind == 'sliding' then
        put(id, t, q.fu, sliding_add(t[q.fu], q, floor))
      else
        put(id, t, q.fu, used_of(t, q) + floor)
        if q.name ~= 'default' and num(t[q.fw], 0) <= NOW then put(id, t, q.fw, window_end(q)) end
      end
    end
  end
  if remaining <= 0 and (lim == nil or q.name ~= 'default') then
    -- The target says none is left: cool until its reset (or, knowing no limit, a window).
    local back = reset_at or (NOW + q.window_ms)
    if back > num(t.cool_until, 0) then put(id, t, 'cool_until', back) end
  end
end

-- What the target's rate-limit headers said (`rate_limit`: header family -> {remaining,
-- reset_at}), counted on each quota that follows a family (`sync`).
local function count_target_headers(id, t, c, rate_limit)
  local all = quotas_of(c)
  for k = 1, #all do
    local q = all[k]
    local s = q.sync and rate_limit[q.sync]
    if s then count_target_quota(id, t, c, q, tonumber(s.remaining), tonumber(s.reset_at)) end
  end
end

-- One quota of the pool by name, or nil.
local function quota_named(c, name)
  local all = quotas_of(c)
  for k = 1, #all do
    local q = all[k]
    if q.name == name then return q end
  end
  return nil
end

-- Token `t`'s quota `q` as it stands now, for readers (metadata, status), without writing.
local function one_quota_now(t, q)
  local e = { used = used_of(t, q), reserved = num(t[q.fr], 0), limit = limit_of(t, q), win_end = 0 }
  if q.kind == 'sliding' then
    e.win_end = sliding_relief(t[q.fu], q) or 0
  else
    e.win_end = num(t[q.fw], 0)
    if e.win_end <= NOW then e.win_end = 0 end
  end
  return e
end

-- The `default` quota now, and every other one (with its name), for readers.
local function quota_now(t, c) return one_quota_now(t, quotas_of(c)[1]) end
local function quotas_now(t, c)
  local out = {}
  for i, q in ipairs(quotas_of(c)) do
    if i > 1 then
      local e = one_quota_now(t, q)
      e.name = q.name
      out[#out + 1] = e
    end
  end
  return out
end

-- How much of its quota token `t` has left, from 0 to 1: the lowest share of any limited quota
-- (1 when none is limited). Pipelines prefer tokens with the most.
local function quota_headroom(t, c)
  local low = 1
  local all = quotas_of(c)
  for k = 1, #all do
    local q = all[k]
    local room = room_of(t, q)
    if room ~= nil then
      local per = limit_of(t, q) - q.reserve
      local share = 0
      if per > 0 then share = math.max(0, room) / per end
      if share < low then low = share end
    end
  end
  return low
end
