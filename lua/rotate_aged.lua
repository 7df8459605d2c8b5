-- rotate_aged.lua: start the scheduled rotation of up to `batch` tokens whose age reached the
-- pool's `max_age_s` (rules/age.lua), oldest first, while fewer than `max_in_flight` are being
-- rotated. Each becomes `deprecated` (leasable only when nothing else is) with a sunset
-- `overlap_s` from now and a refresh job: through its grant (the refresher) or, without one,
-- by the external login workers. Its refresh makes it current again (job_complete.lua); its
-- sunset revokes it (sunset_tokens.lua).
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::RotateAged` (vault-core), read here as locals of the same names.
-- Returns {"started":[{"token_id","aged_from","sunset_at","login_workers":bool}...],
--   "in_flight":n}.
local c = load_cfg_all()
if c == nil then return reply({ started = {}, in_flight = 0 }) end
local s = rotation_schedule(c)
local rk = rotating_key()
if s == nil then
  -- Scheduled rotation turned off: what was being rotated finishes as it is; nothing starts.
  return reply({ started = {}, in_flight = redis.call('SCARD', rk) })
end
-- Tokens no longer being rotated on schedule (their job failed for good, an operator revoked
-- or restored them) leave the in-flight set; a few per call keep it exact without a walk.
for _, id in ipairs(redis.call('SRANDMEMBER', rk, 16)) do
  local f = redis.call('HMGET', tkey(id), 'state', 'rotation')
  if f[1] ~= 'deprecated' or f[2] ~= SCHEDULED then redis.call('SREM', rk, id) end
end
local room = s.max_in_flight - redis.call('SCARD', rk)
local started = {}
if room <= 0 then return reply({ started = started, in_flight = redis.call('SCARD', rk) }) end
local ak = aged_key()
local sunset = NOW + s.overlap_ms
local due = redis.call('ZRANGEBYSCORE', ak, '-inf', aged_by(s, NOW), 'WITHSCORES', 'LIMIT', 0, math.min(batch, room))
for i = 1, #due, 2 do
  local id, from = due[i], tonumber(due[i + 1])
  local t = load_token(id)
  if t == nil or t.state ~= 'active' then
    -- Out of rotation (its return re-indexes it), or deprecated by an emergency rotation.
    if t == nil or t.state ~= 'cooling' then redis.call('ZREM', ak, id) end
  else
    redis.call('ZREM', ak, id)
    put(id, t, 'state', 'deprecated')
    put(id, t, 'rotation', SCHEDULED)
    put(id, t, 'sunset_at', sunset)
    redis.call('ZADD', sunset_key(), sunset, id)
    redis.call('SADD', rk, id)
    enqueue_job(id, t)
    reconcile(id, t, c)
    started[#started + 1] = { token_id = t.id, aged_from = from, sunset_at = sunset,
      login_workers = by_login_workers(t) }
  end
end
return reply({ started = started, in_flight = redis.call('SCARD', rk) })
