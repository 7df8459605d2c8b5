-- quota.lua: the quota rule — units per token per fixed window, rotated out at `limit - reserve`.

local function window_ms(c) return setting(c, 'quota_window_s') * 1000 end

local function limit_of(t, c)
  if t.quota_limit ~= nil and t.quota_limit ~= '' then return tonumber(t.quota_limit) end
  if c.quota_limit ~= nil and c.quota_limit ~= '' then return tonumber(c.quota_limit) end
  return nil
end

-- Units still grantable in the current window, or nil when unlimited.
local function headroom(t, c)
  local lim = limit_of(t, c)
  if lim == nil then return nil end
  return lim - setting(c, 'quota_reserve') - num(t.used, 0) - num(t.reserved, 0)
end

-- The quota window is fixed and starts at the first reservation after the last one ended.
local function window_over(t)
  local we = num(t.win_end, 0)
  return we > 0 and NOW >= we
end

local function roll_window(id, t)
  if window_over(t) then put_all(id, t, { 'used', 0, 'win_end', 0 }) end
end

-- What a target said of the token's quota in its answer to a leased call: `remaining` units
-- until `reset_at` (ms). The target knows its own window: its end becomes the token's. Its count
-- can only raise the vault's, never lower it: reports of leases sharing a token arrive out of
-- order, and an older answer's `remaining` is higher than the truth by every call made since (so
-- trusting it would let the token past its quota). The count starts over when the window ends.
local function count_target_quota(id, t, c, remaining, reset_at)
  if reset_at ~= nil and reset_at > NOW then put(id, t, 'win_end', reset_at) end
  if remaining == nil then return end
  local lim = limit_of(t, c)
  if lim ~= nil then
    local used = lim - remaining
    if used > num(t.used, 0) then put(id, t, 'used', used) end
  elseif remaining <= 0 then
    -- No limit known to the vault, but the target says none is left: cool until its reset.
    local back = reset_at or (NOW + window_ms(c))
    if back > num(t.cool_until, 0) then put(id, t, 'cool_until', back) end
  end
end

-- The token's quota as it stands now, for readers (metadata, status), without writing: a window
-- that is over counts nothing used, as `roll_window` records at the token's next transition.
local function quota_now(t, c)
  local q = { used = num(t.used, 0), reserved = num(t.reserved, 0), limit = limit_of(t, c),
              win_end = num(t.win_end, 0) }
  if window_over(t) then q.used, q.win_end = 0, 0 end
  return q
end
