-- rotation_calendar.lua: when the pool's tokens reach their maximum age (rules/age.lua): how
-- many are past it now, and how many reach it in each of `days` days from `from_ms` (a
-- midnight UTC), counted in the age index (O(log n) per day, whatever the pool's size).
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::RotationCalendar` (vault-core), read here as locals of the same names.
-- Returns {"scheduled":false} | {"scheduled":true,"in_flight","overdue","next_due_ms" (0: none),
--   "days":[n...]} | {"err":"pool_not_found"}.
local c = load_cfg_all()
if c == nil then return fail('pool_not_found') end
local s = rotation_schedule(c)
if s == nil then return reply({ scheduled = false }) end
local ak = aged_key()
local counts = {}
local day_ms = 86400000
for d = 0, days - 1 do
  -- Due in [day start, day end), and not counted as overdue already.
  local lo = aged_by(s, math.max(from_ms + d * day_ms, NOW + 1))
  local hi = aged_by(s, from_ms + (d + 1) * day_ms)
  if hi <= lo then counts[#counts + 1] = 0
  else counts[#counts + 1] = redis.call('ZCOUNT', ak, lo, '(' .. hi) end
end
local first = redis.call('ZRANGE', ak, 0, 0, 'WITHSCORES')
local next_due = 0
if #first > 0 then next_due = due_at(s, tonumber(first[2])) end
return reply({
  scheduled = true, in_flight = redis.call('SCARD', rotating_key()),
  overdue = redis.call('ZCOUNT', ak, '-inf', aged_by(s, NOW)), next_due_ms = next_due,
  days = counts,
})
