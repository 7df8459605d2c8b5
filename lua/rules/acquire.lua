-- acquire.lua: which token a lease gets, and its reservation.

-- How many `ready` entries acquire inspects before answering pool_exhausted. Tokens with no
-- headroom at all are never in `ready`, so this bound is only reached when many tokens have
-- less headroom than the requested units or less life than the lease needs.
local SCAN_LIMIT = 16

-- How many expired leases one acquire reclaims on its way (the janitor does the rest).
local LAZY_REAP = 8

-- The first eligible token of `ready` (at most SCAN_LIMIT looked at), or nil.
local function first_eligible(c, o, need_ttl)
  -- The first few usually do; the rest of the scan is read only when they do not.
  local from = 0
  for _, upto in ipairs({ 3, SCAN_LIMIT - 1 }) do
    for _, id in ipairs(redis.call('ZRANGE', o.ready, from, upto)) do
      if id ~= o.exclude then
        local t = load_token_hot(id)
        if t == nil then
          redis.call('ZREM', o.ready, id)
        elseif eligible(id, t, c, o.units, o.costs, need_ttl) then
          return id, t
        end
      end
    end
    from = upto + 1
  end
  return nil, nil
end

-- Acquire a lease. o = {lease_id, worker, units, costs (cost dimension -> estimate, or nil),
-- ttl_ms, min_ttl_ms, session, idem, idem_fp, exclude, pipeline ("" = the free part of the
-- pool)}. Returns the answer table and the leased token's internal id (its sealed secret goes
-- with the answer), or an encoded error.
local function do_acquire(c, o)
  local replayed, replayed_id = idem_replay(c, o)
  if replayed ~= nil then return replayed, replayed_id end
  if frozen(c) then return fail('pool_frozen') end
  o.pipeline = o.pipeline or ''
  o.ready = K.ready
  if o.pipeline ~= '' then
    local closed = share_closed(o.pipeline)
    if closed ~= nil then return closed end
    o.ready = pr_key(o.pipeline)
  end
  local invalid = costs_error(c, o.costs)
  if invalid ~= nil then return invalid end
  o.costs = lease_costs(c, o.costs)

  local need_ttl = o.ttl_ms
  if o.min_ttl_ms > need_ttl then need_ttl = o.min_ttl_ms end
  local chosen, ct = session_token(o, c, need_ttl)
  if chosen == nil then chosen, ct = first_eligible(c, o, need_ttl) end
  -- Leases whose worker died come back here too, a few at a time, when nothing else is
  -- leasable: a pool never stays exhausted by dead leases while the janitor is away.
  if chosen == nil and #reap_expired(c, LAZY_REAP) > 0 then
    chosen, ct = first_eligible(c, o, need_ttl)
  end
  if chosen == nil then
    return fail('pool_exhausted', { retry_after_ms = retry_after_ms() })
  end

  -- reserve
  local fv = { 'leases', num(ct.leases, 0) + 1, 'last_leased_at', NOW }
  quota_reserve(ct, c, o.units, o.costs, fv)
  if (ct.lid or '') == '' then
    fv[#fv + 1] = 'lid'
    fv[#fv + 1] = o.lease_id
  else
    redis.call('SADD', tlkey(chosen), o.lease_id)
  end
  stage(ct, fv)
  local deadline = NOW + o.ttl_ms
  local l = { token = chosen, pipeline = o.pipeline, worker = o.worker, units = str(o.units), costs = o.costs,
              granted_at = str(NOW),
              deadline = str(deadline), ttl_ms = str(o.ttl_ms), idem = o.idem,
              idem_fp = o.idem_fp or '' }
  lease_store(o.lease_id, l)
  redis.call('ZADD', K.leases, deadline, o.lease_id)
  idem_record(o)
  session_keep(o, chosen, c)
  if o.pipeline ~= '' then share_count(o.pipeline, o.units) end
  reconcile(chosen, ct, c)
  return { lease = lease_view(o.lease_id, l, ct) }, chosen
end
