-- outcomes.lua: what a worker's report does to its token, and releasing a lease.

-- Apply a worker's report about how the token fared. `r` = {outcome, retry_after_ms,
-- remaining, reset_at, quotas, rate_limit, detail}; numeric fields are nil when absent.
-- `remaining` and `reset_at` speak of the `default` quota, `quotas` (name -> {remaining,
-- reset_at}) of any, `rate_limit` (header family -> the same) of the quotas that follow it.
local function apply_outcome(id, t, c, r)
  if not in_rotation(t) then return end
  count_target_quota(id, t, c, quotas_of(c)[1], r.remaining, r.reset_at)
  if r.quotas ~= nil then
    for name, s in pairs(r.quotas) do
      count_target_quota(id, t, c, quota_named(c, name), tonumber(s.remaining), tonumber(s.reset_at))
    end
  end
  if r.rate_limit ~= nil then count_target_headers(id, t, c, r.rate_limit) end
  local o = r.outcome
  if o == 'ok' then
    if num(t.strikes, 0) ~= 0 then put(id, t, 'strikes', 0) end
  elseif o == 'rate_limited' then
    -- The target's Retry-After says exactly when to come back; its reset time is when the
    -- quota window ends (a spent quota already keeps the token out until then, see
    -- count_target_quota), so it decides only when there is no Retry-After.
    local back = nil
    if r.retry_after_ms ~= nil then back = NOW + r.retry_after_ms else back = target_reset(r.reset_at) end
    if back == nil then
      local we = num(t.win_end, 0)
      if we > NOW then back = we else back = NOW + window_ms(c) end
    end
    if back > num(t.cool_until, 0) then put(id, t, 'cool_until', back) end
    put(id, t, 'last_error', 'rate_limited')
  elseif o == 'unauthorized' then
    put(id, t, 'last_error', 'unauthorized')
    out_of_rotation(id, t, c)
    return
  elseif o == 'forbidden' or o == 'suspect' then
    local s = num(t.strikes, 0) + 1
    put(id, t, 'strikes', s)
    put(id, t, 'last_error', o)
    if s >= setting(c, 'quarantine_after_strikes') then quarantine(id, t, c) end
  end
end

-- What is wrong with report `r` for this pool (an encoded error), or nil: it may name only the
-- pool's cost dimensions and quotas.
local function report_error(c, r)
  if r.costs == nil and r.quotas == nil then return nil end
  local invalid = costs_error(c, r.costs)
  if invalid ~= nil then return invalid end
  if r.quotas ~= nil then
    for name in pairs(r.quotas) do
      if quota_named(c, name) == nil then
        return fail('invalid_request', { detail = 'quotas.' .. name .. ': this pool has no such quota' })
      end
    end
  end
  return nil
end

-- Release lease `lid` with report `r` ({used, outcome, retry_after_ms, remaining, reset_at}, as
-- `scripts::ReportArgs` sends it): validate first, then mutate.
-- Returns nil on success or an encoded error.
local function do_release(c, lid, r)
  local invalid = report_error(c, r)
  if invalid ~= nil then return invalid end
  local live = live_lease(c, lid)
  if live == nil then return fail('lease_gone') end
  local units = live.units
  if r.used ~= nil and r.used > tonumber(units) then
    return fail('invalid_request', { detail = 'used (' .. r.used .. ') exceeds the lease\'s units (' .. units .. ')' })
  end
  local l, t = end_lease(c, lid, r.used, r.costs, live, true)
  if t ~= nil then
    apply_outcome(l.token, t, c, r)
    reconcile(l.token, t, c)
  end
  return nil, l, t
end
