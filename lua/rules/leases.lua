-- leases.lua: lease records, ending leases, and the lease-deadline rule.

-- A lease is one field of the pool's `leasedata` hash: its id -> "<token> <units> <granted_at>
-- <deadline> <ttl_ms> <idem_fp> <idem> <worker>" (the token's internal id; idempotency key and
-- worker are printable ASCII without spaces, the worker last). One write per lease instead of a
-- hash of its own, and readable with redis-cli. A lease that reserved other cost dimensions
-- than requests lists them after its units: "1,llm_tokens=1500"; one made through a pipeline
-- names it after its token: "#12@crawl-a".
-- The lease-length rule: the life a lease gets is what was asked (else `default_ms`), cut to
-- the pool's `max_lease_ttl_s` (a worker asking for more gets the most the pool allows, and
-- sees it in the lease's `expires_at`).
local function lease_ttl(c, asked_ms, default_ms)
  return math.min(asked_ms or default_ms, setting(c, 'max_lease_ttl_s') * 1000)
end

local function lease_record(l)
  local units = l.units
  if l.costs ~= nil then
    local parts = { units }
    for k, v in pairs(l.costs) do parts[#parts + 1] = k .. '=' .. str(v) end
    units = table.concat(parts, ',')
  end
  local token = l.token
  if l.pipeline ~= nil and l.pipeline ~= '' then token = token .. '@' .. l.pipeline end
  return table.concat({ token, units, l.granted_at, l.deadline, l.ttl_ms, l.idem_fp or '',
    l.idem or '', l.worker or '' }, ' ')
end

local function lease_load(lid)
  local v = redis.call('HGET', leasedata_key(), lid)
  if not v then return nil end
  local token, units, granted_at, deadline, ttl_ms, idem_fp, idem, worker =
    string.match(v, '^(%S+) (%S+) (%d+) (%d+) (%d+) (%S*) (%S*) (.*)$')
  local costs = nil
  if string.find(units, ',', 1, true) then
    costs = {}
    for k, n in string.gmatch(units, ',([%w_]+)=(%d+)') do costs[k] = tonumber(n) end
    units = string.match(units, '^%d+')
  end
  local pipeline = ''
  if string.find(token, '@', 1, true) then token, pipeline = string.match(token, '^([^@]+)@(.*)$') end
  return { token = token, pipeline = pipeline, units = units, costs = costs,
           granted_at = granted_at, deadline = deadline, ttl_ms = ttl_ms, idem_fp = idem_fp,
           idem = idem, worker = worker }
end

local function lease_store(lid, l)
  redis.call('HSET', leasedata_key(), lid, lease_record(l))
end

-- End one lease: what it reserved goes back, and what it used is counted (`used_units` requests
-- and `used_costs` by dimension; nil or a dimension not given: all it reserved).
-- Returns the lease and the (updated, not yet reconciled) token, or nil when the lease is gone.
-- `c` is the pool's config (nil: the pool is being deleted). `read` is the lease when the caller
-- has just read it (saves reading it again). With `staged` the token's counters are left for the
-- caller's `reconcile` to write.
local function end_lease(c, lid, used_units, used_costs, read, staged)
  local l = read or lease_load(lid)
  if l == nil then return nil, nil end
  redis.call('HDEL', leasedata_key(), lid)
  redis.call('ZREM', K.leases, lid)
  if l.idem ~= nil and l.idem ~= '' then
    local ik = idem_key(l.idem)
    if redis.call('GET', ik) == lid then redis.call('DEL', ik) end
  end
  local t = load_token_hot(l.token)
  if t == nil or t.lid ~= lid then redis.call('SREM', tlkey(l.token), lid) end
  if t ~= nil then
    local fv = { 'leases', math.max(0, num(t.leases, 0) - 1) }
    -- A pool being deleted (no config) counts nothing any more.
    if c ~= nil then
      roll_window(l.token, t, c)
      quota_settle(t, c, num(l.units, 1), l.costs, used_units, used_costs, fv)
    end
    if t.lid == lid then
      fv[#fv + 1] = 'lid'
      fv[#fv + 1] = ''
    end
    if staged then stage(t, fv) else put_all(l.token, t, fv) end
  end
  return l, t
end

-- End lease `lid` without a report (its deadline passed, or the pool's kill switch): all its
-- reserved units count as used. Returns the lease and its token, or nil when it was already gone.
local function reclaim_lease(lid, c)
  local l, t = end_lease(c, lid)
  if l == nil then
    redis.call('ZREM', K.leases, lid)
    return nil
  end
  if t ~= nil and c ~= nil then reconcile(l.token, t, c) end
  return l, t
end

-- Reclaim each of `lids`; returns the {lease_id, token_id} of those that were live.
local function reclaim_leases(c, lids)
  local ended = {}
  for _, lid in ipairs(lids) do
    local l, t = reclaim_lease(lid, c)
    if l ~= nil then
      ended[#ended + 1] = { lease_id = lid, token_id = t and t.id or l.token }
    end
  end
  return ended
end

-- The lease-deadline rule: a lease is over at its deadline, whoever notices first (janitor,
-- acquire, renew, release), and is reclaimed then.
-- Lease `lid` while it is live; nil once it is gone (a lease past its deadline is reclaimed).
local function live_lease(c, lid)
  local l = lease_load(lid)
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
local function end_token_leases(id, c)
  local ended = {}
  for _, lid in ipairs(token_lease_ids(id)) do
    if end_lease(c, lid) ~= nil then ended[#ended + 1] = lid end
  end
  return ended
end

-- What a lease answer carries (the sealed secret goes beside it: `reply_with_secret`; vault-api
-- decrypts it).
local function lease_view(lid, l, t)
  return {
    lease_id = lid, token_id = t.id, worker = l.worker or '', units = num(l.units, 1), costs = l.costs,
    granted_at = num(l.granted_at, 0), deadline = num(l.deadline, 0), ttl_ms = num(l.ttl_ms, 0),
    key_id = t.key_id, expires_at = num(t.expires_at, 0),
    proxy = t.proxy or '', proxy_ct = t.proxy_ct or '', proxy_key_id = t.proxy_key_id or '',
    binding_fp = t.binding_fp or '', pipeline = l.pipeline or '',
  }
end
