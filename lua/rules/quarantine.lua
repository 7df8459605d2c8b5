-- quarantine.lua: the quarantine rule — a token out of rotation until an operator restores it,
-- after `quarantine_after_strikes` strikes or a refresh that failed for good.

-- Take token `id` out of rotation until an operator restores it.
local function quarantine(id, t, c)
  put(id, t, 'state', 'quarantined')
  exp_del(id, t)
  unschedule(id)
  reconcile(id, t, c)
end

-- A refresh attempt that did not give the token a usable credential: counted, then retried
-- after `retry_ms` or, at `max_attempts` (or when `retry_ms` is nil: permanent), quarantined.
-- The job's claim is already removed. Returns the reply table.
local function refresh_attempt_failed(id, t, c, err, retry_ms, max_attempts)
  local attempts = num(t.refresh_attempts, 0) + 1
  put(id, t, 'refresh_attempts', attempts)
  put(id, t, 'last_error', err)
  put(id, t, 'job_id', '')
  redis.call('HINCRBY', stats_key(), 'refresh_fail', 1)
  if retry_ms == nil or attempts >= max_attempts then
    quarantine(id, t, c)
    return { token_id = t.id, state = t.view, attempts = attempts, error = err }
  end
  local retry_at = NOW + retry_ms
  redis.call('ZADD', queue_of(t), retry_at, id)
  return { token_id = t.id, state = t.view, attempts = attempts, retry_at = retry_at, error = err }
end
