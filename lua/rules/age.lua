-- age.lua: the scheduled-rotation rule — a token whose age (since its deposit or its last
-- refresh) reaches the pool's `max_age_s` is rotated: deprecated (leasable only when nothing else
-- is), replaced through its grant or by the login workers, and revoked `overlap_s` later unless
-- it was replaced first. At most `max_in_flight` tokens of a pool are being rotated at once.
-- The pool's settings are the config fields `scheduled_max_age_s` ("" = no scheduled rotation),
-- `scheduled_overlap_s` and `scheduled_max_in_flight`.

-- What a token in scheduled rotation has in its `rotation` field (an emergency rotation writes
-- its rotation id there).
local SCHEDULED = 'scheduled'

-- When token `id`'s age counts from: its last refresh, else its deposit. Read from its hash
-- (whatever fields the caller loaded).
local function aged_from(id)
  local f = redis.call('HMGET', tkey(id), 'refreshed_at', 'created_at')
  local r = num(f[1], 0)
  if r > 0 then return r end
  return num(f[2], 0)
end

-- Index an active token by age (idempotent: the score is where its age counts from).
local function age_index(id, t)
  if t.state == 'active' then redis.call('ZADD', aged_key(), aged_from(id), id) end
end

-- Forget a token's age and scheduled rotation (revoked, deleted, quarantined).
local function age_forget(id)
  redis.call('ZREM', aged_key(), id)
  redis.call('SREM', rotating_key(), id)
end

-- The rule itself, both ways: a token whose age counts from `from` is due at `due_at`; the
-- tokens due by `at` are those whose age counts from `aged_by` or earlier (what the `aged`
-- index is searched with). Rust's twin: `RotationSchedule::rotation_due_at`.
local function due_at(s, from) return from + s.max_age_ms end
local function aged_by(s, at) return at - s.max_age_ms end

-- The pool's schedule: max age and overlap in ms, and the tokens rotated at once; nil when the
-- pool rotates nothing on schedule.
local function rotation_schedule(c)
  local age = tonumber(c.scheduled_max_age_s or '')
  if age == nil or age <= 0 then return nil end
  return {
    max_age_ms = age * 1000,
    overlap_ms = num(c.scheduled_overlap_s, 0) * 1000,
    max_in_flight = num(c.scheduled_max_in_flight, 1),
  }
end
