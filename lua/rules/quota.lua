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

-- The token's quota as it stands now, for readers (metadata, status), without writing: a window
-- that is over counts nothing used, as `roll_window` records at the token's next transition.
local function quota_now(t, c)
  local q = { used = num(t.used, 0), reserved = num(t.reserved, 0), limit = limit_of(t, c),
              win_end = num(t.win_end, 0) }
  if window_over(t) then q.used, q.win_end = 0, 0 end
  return q
end
