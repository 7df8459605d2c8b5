-- prelude.lua: shared helpers of the tokenvault function library (vault-core/src/scripts.rs
-- assembles it: this file, then each transition as a function, then their registrations).
-- It is not a transition itself; each transition is one atomic function.
--
-- Every transition receives the same keys, built by vault-core's key builder (keys.rs):
--   keys[1] cfg    hash  pool config               keys[2] ready  zset  leasable tokens (score = preference)
--   keys[3] cool   zset  cooling tokens (score = back-at ms)
--   keys[4] leases zset  live leases (score = deadline ms)
--   keys[5] exp    zset  tokens in rotation by expires_at ms
--   keys[6] ids    set   every token id of the pool
--   keys[7] jobs   zset  refresh jobs (score = visible-at ms)
--   keys[8] base   the pool's key prefix `tv:{pool}:`; per-token/lease keys are built from it,
--                  so they share the pool's hash slot (cluster-safe).
-- ARGV[1] is always "now" in unix ms, or "" to use Redis TIME (the one clock of the system).

-- The call being served: set by `begin` at the start of every call (functions share this
-- library's state, and Redis runs one call at a time).
local KEYS, ARGV, K, NOW

local function clock()
  if ARGV[1] ~= nil and ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function begin(keys, args)
  KEYS, ARGV = keys, args
  K = { cfg = keys[1], ready = keys[2], cool = keys[3], leases = keys[4], exp = keys[5],
        ids = keys[6], jobs = keys[7], base = keys[8] }
  NOW = clock()
end

-- Deprecated tokens stay leasable but sort after every active one.
local DEPRECATED_OFFSET = 100000000000000

local function num(v, d)
  local n = tonumber(v)
  if n == nil then return d end
  return n
end

local function hgetall(key)
  local raw = redis.call('HGETALL', key)
  if #raw == 0 then return nil end
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
  return h
end

local function tkey(id) return K.base .. 't:' .. id end
local function lkey(lid) return K.base .. 'l:' .. lid end
local function tlkey(id) return K.base .. 'tl:' .. id end
local function vkey(view) return K.base .. 'v:' .. view end
local function stats_key() return K.base .. 'stats' end

local function reply(t) return cjson.encode(t) end
local function fail(code, extra)
  local t = extra or {}
  t.err = code
  return cjson.encode(t)
end

-- The pool's config, or nil when there is no pool. A pool being deleted (in batches, by
-- pool_op.lua) is gone for every transition from the moment its deletion starts.
local function load_cfg()
  local c = hgetall(K.cfg)
  if c ~= nil and c.op == 'delete' then return nil end
  return c
end

-- Whole-pool operations (reconfigure, rotate, cancel, delete) run in batches, one at a time
-- per pool: the starting script records it in the config, pool_op.lua does the batches.
local function op_running(c) return c.op ~= nil and c.op ~= '' end
-- Returns the operation's id: its drivers pass it to pool_op.lua to get its own result back
-- even when another driver finished it.
local function op_start(kind, args)
  local id = redis.call('HINCRBY', K.cfg, 'op_seq', 1)
  redis.call('HSET', K.cfg, 'op', kind, 'op_id', id, 'op_cursor', '0', 'op_affected', 0, 'op_started_at', NOW)
  for k, v in pairs(args or {}) do redis.call('HSET', K.cfg, 'op_' .. k, v) end
  return tostring(id)
end
local function op_busy(c)
  return fail('conflict', { detail = 'a pool operation (' .. c.op .. ') is running; retry when it is done' })
end

local function window_ms(c) return num(c.quota_window_s, 3600) * 1000 end
local function max_leases(c) return num(c.max_leases_per_token, 1) end
local function min_ttl_ms(c)
  if c.min_token_ttl_s ~= nil and c.min_token_ttl_s ~= '' then return num(c.min_token_ttl_s, 0) * 1000 end
  return (num(c.lease_ttl_s, 60) + 30) * 1000
end
local function limit_of(t, c)
  if t.quota_limit ~= nil and t.quota_limit ~= '' then return tonumber(t.quota_limit) end
  if c.quota_limit ~= nil and c.quota_limit ~= '' then return tonumber(c.quota_limit) end
  return nil
end
-- Units still grantable in the current window, or nil when unlimited.
local function headroom(t, c)
  local lim = limit_of(t, c)
  if lim == nil then return nil end
  return lim - num(c.quota_reserve, 0) - num(t.used, 0) - num(t.reserved, 0)
end

-- Set a token field in Redis and in the in-memory copy together.
local function put(id, t, field, value)
  t[field] = tostring(value)
  redis.call('HSET', tkey(id), field, t[field])
end

-- The quota window is fixed and starts at the first reservation after the last one ended.
local function roll_window(id, t)
  local we = num(t.win_end, 0)
  if we > 0 and NOW >= we then
    put(id, t, 'used', 0)
    put(id, t, 'win_end', 0)
  end
end

-- exp zset membership, with a running sum so the average remaining TTL is O(1).
local function exp_add(id, t)
  local at = num(t.expires_at, 0)
  if at <= 0 then return end
  if redis.call('ZADD', K.exp, at, id) == 1 then
    redis.call('HINCRBY', stats_key(), 'exp_sum_s', math.floor(at / 1000))
  end
end
local function exp_del(id, t)
  if redis.call('ZREM', K.exp, id) == 1 then
    redis.call('HINCRBY', stats_key(), 'exp_sum_s', -math.floor(num(t.expires_at, 0) / 1000))
  end
end

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

local function refreshable(t)
  return t.refresh_kind ~= nil and t.refresh_kind ~= '' and t.refresh_kind ~= 'none'
end

-- Refresh scheduling. `due` holds refreshable tokens by the time their preemptive refresh is
-- due (expires_at - refresh_margin_s); `jobs` (refresher) and `xjobs` (external login
-- workers) hold queued jobs by visible-at; `<queue>:claimed` holds claimed jobs by the end of
-- their visibility timeout (the distributed in-flight count per pool).
local function due_key() return K.base .. 'due' end
local function xjobs_key() return K.base .. 'xjobs' end
local function job_key(job_id) return K.base .. 'job:' .. job_id end
local function queue_of(t)
  if t.refresh_kind == 'external' then return xjobs_key() end
  return K.jobs
end
local function margin_ms(c)
  if c.refresh_margin_s ~= nil and c.refresh_margin_s ~= '' then return num(c.refresh_margin_s, 0) * 1000 end
  return min_ttl_ms(c) + 30000
end
local function due_add(id, t, c)
  local at = num(t.expires_at, 0)
  if refreshable(t) and at > 0 then
    local due = at - margin_ms(c)
    -- A credential issued for less than the margin would be due at once and refreshed again
    -- and again: it is refreshed halfway through its usable life instead.
    if due < NOW then due = NOW + math.floor(math.max(0, at - min_ttl_ms(c) - NOW) / 2) end
    redis.call('ZADD', due_key(), due, id)
  end
end
-- Queue a refresh job now; a token already queued keeps its place (at most one job at a time).
local function enqueue_job(id, t)
  redis.call('ZADD', queue_of(t), 'NX', NOW, id)
end
-- Forget every refresh schedule of a token (revoked, deleted, quarantined).
local function unschedule(id)
  redis.call('ZREM', K.jobs, id)
  redis.call('ZREM', xjobs_key(), id)
  redis.call('ZREM', due_key(), id)
end

-- Take a token out of rotation because it is (nearly) expired or came back 401:
-- `refreshing` with a refresh job when it can be refreshed, else `expired`.
local function out_of_rotation(id, t, c)
  exp_del(id, t)
  redis.call('ZREM', due_key(), id)
  if refreshable(t) then
    put(id, t, 'state', 'refreshing')
    enqueue_job(id, t)
  else
    put(id, t, 'state', 'expired')
  end
  reconcile(id, t, c)
end

-- True when the token is too close to expiry for the pool (it then leaves rotation).
local function too_short_lived(t, c)
  local at = num(t.expires_at, 0)
  return at > 0 and at - NOW < min_ttl_ms(c)
end

-- Seconds a token has left (rounded), or nil when it never expires.
local function issued_lifetime_s(t)
  local at = num(t.expires_at, 0)
  if at <= 0 then return nil end
  return math.max(0, math.floor((at - NOW + 500) / 1000))
end

-- A token (re)entering rotation: indexed by expiry and refresh due time and placed, unless it
-- is already too short-lived, in which case it leaves rotation at once.
local function back_in_rotation(id, t, c)
  if too_short_lived(t, c) then
    out_of_rotation(id, t, c)
  else
    exp_add(id, t)
    due_add(id, t, c)
    reconcile(id, t, c)
  end
end

-- The claim behind a refresh job, checked: returns (job, token id, token) or (nil, error).
-- A job that was taken over, a token refreshed by another path (generation moved) or revoked
-- makes the caller's result stale; its job record is dropped either way.
local function load_claim(job_id, allow_expired)
  local j = hgetall(job_key(job_id))
  if j == nil then return nil, fail('job_gone') end
  local t = hgetall(tkey(j.token))
  if t == nil then
    redis.call('DEL', job_key(job_id))
    return nil, fail('job_gone')
  end
  if t.job_id ~= job_id or (t.generation or '1') ~= j.gen or t.state == 'revoked'
    or (t.state == 'expired' and not allow_expired) then
    redis.call('DEL', job_key(job_id))
    return nil, fail('stale_job', { detail = 'the job was taken over, the token was refreshed by another path, or it was revoked' })
  end
  return j, j.token, t
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
    unschedule(id)
    exp_del(id, t)
    put(id, t, 'state', 'quarantined')
    reconcile(id, t, c)
    return { token_id = id, state = t.view, attempts = attempts, error = err }
  end
  local retry_at = NOW + retry_ms
  redis.call('ZADD', queue_of(t), retry_at, id)
  return { token_id = id, state = t.view, attempts = attempts, retry_at = retry_at, error = err }
end

-- End one lease: its reserved units go back, `used_units` of them are counted as used.
-- Returns the lease and the (updated, not yet reconciled) token, or nil when the lease is gone.
local function end_lease(lid, used_units)
  local l = hgetall(lkey(lid))
  if l == nil then return nil, nil end
  redis.call('DEL', lkey(lid))
  redis.call('ZREM', K.leases, lid)
  redis.call('SREM', tlkey(l.token), lid)
  if l.idem ~= nil and l.idem ~= '' then
    local ik = K.base .. 'idem:' .. l.idem
    if redis.call('GET', ik) == lid then redis.call('DEL', ik) end
  end
  local t = hgetall(tkey(l.token))
  if t ~= nil then
    local units = num(l.units, 1)
    if used_units == nil or used_units > units then used_units = units end
    roll_window(l.token, t)
    put(l.token, t, 'leases', math.max(0, num(t.leases, 0) - 1))
    put(l.token, t, 'reserved', math.max(0, num(t.reserved, 0) - units))
    put(l.token, t, 'used', num(t.used, 0) + used_units)
  end
  return l, t
end

-- End lease `lid` without a report (its deadline passed, or the pool's kill switch): all its
-- reserved units count as used. Returns the lease, or nil when it was already gone.
local function reclaim_lease(lid, c)
  local l, t = end_lease(lid, nil)
  if l == nil then
    redis.call('ZREM', K.leases, lid)
    return nil
  end
  if t ~= nil and c ~= nil then reconcile(l.token, t, c) end
  return l
end

-- Reclaim each of `lids`; returns the {lease_id, token_id} of those that were live.
local function reclaim_leases(c, lids)
  local ended = {}
  for _, lid in ipairs(lids) do
    local l = reclaim_lease(lid, c)
    if l ~= nil then ended[#ended + 1] = { lease_id = lid, token_id = l.token } end
  end
  return ended
end

-- The lease-deadline rule: a lease is over at its deadline, whoever notices first (janitor,
-- acquire, renew, release), and is reclaimed then.
-- Lease `lid` while it is live; nil once it is gone (a lease past its deadline is reclaimed).
local function live_lease(c, lid)
  local l = hgetall(lkey(lid))
  if l == nil then return nil end
  if num(l.deadline, 0) <= NOW then
    reclaim_lease(lid, c)
    return nil
  end
  return l
end

-- Reclaim up to `max` of the pool's leases whose deadline passed.
local function reap_expired(c, max)
  return reclaim_leases(c, redis.call('ZRANGEBYSCORE', K.leases, '-inf', NOW, 'LIMIT', 0, max))
end

-- End every live lease of a token, counting their units as used. Returns the lease ids.
local function end_token_leases(id)
  local ended = {}
  for _, lid in ipairs(redis.call('SMEMBERS', tlkey(id))) do
    if end_lease(lid, nil) ~= nil then ended[#ended + 1] = lid end
  end
  return ended
end

-- What a lease answer carries (the secret stays encrypted; vault-api decrypts it).
local function lease_view(lid, l, t)
  return {
    lease_id = lid, token_id = l.token, worker = l.worker or '', units = num(l.units, 1),
    granted_at = num(l.granted_at, 0), deadline = num(l.deadline, 0), ttl_ms = num(l.ttl_ms, 0),
    secret_ct = t.secret_ct, key_id = t.key_id, expires_at = num(t.expires_at, 0),
    proxy = t.proxy or '', proxy_ct = t.proxy_ct or '', proxy_key_id = t.proxy_key_id or '',
    binding_fp = t.binding_fp or '',
  }
end

-- Is token `id` leasable now for `units` units by a lease that needs `need_ttl_ms` of token life?
-- Tokens that fail a pool-wide rule are moved out of `ready` on the way (lazy repair).
local function eligible(id, t, c, units, need_ttl_ms)
  if t == nil or not in_rotation(t) then return false end
  if too_short_lived(t, c) then out_of_rotation(id, t, c); return false end
  roll_window(id, t)
  if num(t.cool_until, 0) > NOW or num(t.leases, 0) >= max_leases(c) then
    reconcile(id, t, c); return false
  end
  local room = headroom(t, c)
  if room ~= nil and room <= 0 then reconcile(id, t, c); return false end
  if room ~= nil and room < units then return false end
  local at = num(t.expires_at, 0)
  if at > 0 and at - NOW < need_ttl_ms then return false end
  return true
end

-- How long until something in the pool can become leasable: a cooldown ends or a lease ends.
local function retry_after_ms()
  local best = nil
  local c1 = redis.call('ZRANGE', K.cool, 0, 0, 'WITHSCORES')
  if #c1 > 0 then best = tonumber(c1[2]) end
  local l1 = redis.call('ZRANGE', K.leases, 0, 0, 'WITHSCORES')
  if #l1 > 0 and (best == nil or tonumber(l1[2]) < best) then best = tonumber(l1[2]) end
  if best == nil then return nil end
  return math.max(0, best - NOW)
end

-- How many `ready` entries acquire inspects before answering pool_exhausted. Tokens with no
-- headroom at all are never in `ready`, so this bound is only reached when many tokens have
-- less headroom than the requested units or less life than the lease needs.
local SCAN_LIMIT = 16
-- How many expired leases one acquire reclaims on its way (the janitor does the rest).
local LAZY_REAP = 8

-- Acquire a lease. o = {lease_id, worker, units, ttl_ms, min_ttl_ms, session, idem, idem_fp,
-- exclude}.
local function do_acquire(c, o)
  if o.idem ~= '' then
    local existing = redis.call('GET', K.base .. 'idem:' .. o.idem)
    if existing then
      local l = live_lease(c, existing)
      if l == nil then return fail('idempotency_conflict') end
      if (l.idem_fp or '') ~= (o.idem_fp or '') then return fail('idempotency_mismatch') end
      local t = hgetall(tkey(l.token))
      local v = lease_view(existing, l, t)
      v.replayed = true
      return reply({ lease = v })
    end
  end
  if c.frozen == '1' then return fail('pool_frozen') end
  -- Leases whose worker died come back here too, a few per call, so a pool never stays
  -- exhausted by dead leases while the janitor is away.
  reap_expired(c, LAZY_REAP)

  local need_ttl = o.ttl_ms
  if o.min_ttl_ms > need_ttl then need_ttl = o.min_ttl_ms end
  local chosen, ct = nil, nil

  local skey = nil
  if o.session ~= '' then
    skey = K.base .. 's:' .. o.session
    local sid = redis.call('GET', skey)
    if sid and sid ~= o.exclude then
      local t = hgetall(tkey(sid))
      if eligible(sid, t, c, o.units, need_ttl) then chosen, ct = sid, t end
    end
  end
  if chosen == nil then
    local cands = redis.call('ZRANGE', K.ready, 0, SCAN_LIMIT - 1)
    for _, id in ipairs(cands) do
      if id ~= o.exclude then
        local t = hgetall(tkey(id))
        if t == nil then
          redis.call('ZREM', K.ready, id)
        elseif eligible(id, t, c, o.units, need_ttl) then
          chosen, ct = id, t
          break
        end
      end
    end
  end
  if chosen == nil then
    return fail('pool_exhausted', { retry_after_ms = retry_after_ms() })
  end

  -- reserve
  if num(ct.win_end, 0) == 0 then put(chosen, ct, 'win_end', NOW + window_ms(c)) end
  put(chosen, ct, 'leases', num(ct.leases, 0) + 1)
  put(chosen, ct, 'reserved', num(ct.reserved, 0) + o.units)
  put(chosen, ct, 'last_leased_at', NOW)
  local deadline = NOW + o.ttl_ms
  local l = { token = chosen, worker = o.worker, units = tostring(o.units), granted_at = tostring(NOW),
              deadline = tostring(deadline), ttl_ms = tostring(o.ttl_ms), idem = o.idem,
              idem_fp = o.idem_fp or '' }
  redis.call('HSET', lkey(o.lease_id), 'token', l.token, 'worker', l.worker, 'units', l.units,
    'granted_at', l.granted_at, 'deadline', l.deadline, 'ttl_ms', l.ttl_ms, 'idem', l.idem,
    'idem_fp', l.idem_fp)
  redis.call('ZADD', K.leases, deadline, o.lease_id)
  redis.call('SADD', tlkey(chosen), o.lease_id)
  if o.idem ~= '' then
    redis.call('SET', K.base .. 'idem:' .. o.idem, o.lease_id, 'PX', o.ttl_ms)
  end
  if skey ~= nil then
    redis.call('SET', skey, chosen, 'PX', num(c.session_ttl_s, 600) * 1000)
  end
  reconcile(chosen, ct, c)
  return reply({ lease = lease_view(o.lease_id, l, ct) })
end

-- Apply a worker's report about how the token fared. `r` = {outcome, retry_after_ms,
-- remaining, reset_at, detail}; numeric fields are nil when absent.
local function apply_outcome(id, t, c, r)
  if not in_rotation(t) then return end
  local lim = limit_of(t, c)
  if r.reset_at ~= nil and r.reset_at > NOW then put(id, t, 'win_end', r.reset_at) end
  if r.remaining ~= nil then
    if lim ~= nil then
      put(id, t, 'used', math.max(0, lim - r.remaining))
    elseif r.remaining <= 0 then
      local back = r.reset_at or (NOW + window_ms(c))
      if back > num(t.cool_until, 0) then put(id, t, 'cool_until', back) end
    end
  end
  local o = r.outcome
  if o == 'ok' then
    if num(t.strikes, 0) ~= 0 then put(id, t, 'strikes', 0) end
  elseif o == 'rate_limited' then
    local back = r.reset_at
    if back == nil and r.retry_after_ms ~= nil then back = NOW + r.retry_after_ms end
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
    if s >= num(c.quarantine_after_strikes, 3) then
      put(id, t, 'state', 'quarantined')
      exp_del(id, t)
      unschedule(id)
    end
  end
end

-- Parse the report arguments shared by release and rotate, starting at ARGV[i].
local function report_args(i)
  local function optnum(v) if v == nil or v == '' then return nil end return tonumber(v) end
  return { used = optnum(ARGV[i]), outcome = ARGV[i + 1], retry_after_ms = optnum(ARGV[i + 2]),
           remaining = optnum(ARGV[i + 3]), reset_at = optnum(ARGV[i + 4]) }
end

-- Release lease `lid` with report `r`: validate first, then mutate.
-- Returns nil on success or an encoded error.
local function do_release(c, lid, r)
  local live = live_lease(c, lid)
  if live == nil then return fail('lease_gone') end
  local units = live.units
  if r.used ~= nil and r.used > tonumber(units) then
    return fail('invalid_request', { detail = 'used (' .. r.used .. ') exceeds the lease\'s units (' .. units .. ')' })
  end
  local l, t = end_lease(lid, r.used)
  if t ~= nil then
    apply_outcome(l.token, t, c, r)
    reconcile(l.token, t, c)
  end
  return nil, l, t
end
