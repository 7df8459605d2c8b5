-- base.lua: what every rule and transition uses: the call's keys and clock, key builders,
-- replies. vault-core/src/scripts.rs assembles the function library: the files of lua/rules/ in
-- dependency order, then each transition of lua/ as a function, then their registrations.
--
-- Every transition receives the same keys, built by vault-core's key builder (keys.rs):
--   keys[1] cfg    hash  pool config               keys[2] ready  zset  leasable tokens (score = preference)
--   keys[3] cool   zset  cooling tokens (score = back-at ms)
--   keys[4] leases zset  live leases (score = deadline ms)
--   keys[5] exp    zset  tokens in rotation by expires_at ms
--   keys[6] tokens hash  every token of the pool: its id (as the user gave it) -> its internal id
--   keys[7] jobs   zset  refresh jobs (score = visible-at ms)
--   keys[8] base   the pool's key prefix `tv:{pool}:`; per-token/lease keys are built from it,
--                  so they share the pool's hash slot (cluster-safe). It is never written as
--                  a key, and that is the resharding guard: while the pool's slot migrates, a
--                  call whose declared keys are not all on one node is refused whole by Redis
--                  (TRYAGAIN) before it runs, so no function ever meets a half-moved pool.
-- ARGV[1] is always "now" in unix ms, or "" to use Redis TIME (the one clock of the system).
--
-- Internal ids. A token is stored under a short internal id, `#<n>` (n from the pool's deposit
-- counter, so it is also the token's deposit order), and every index (ready, cool, exp, due,
-- sunset, job queues, view sets, leases) holds that id; the token's own id, as deposited, is its
-- hash's `id` field and the key of `tokens`. Functions take and answer the user's ids; `#` is
-- never in one, so the two cannot be confused.

-- The call being served: set by `begin` at the start of every call (functions share this
-- library's state, and Redis runs one call at a time).
local KEYS, ARGV, NOW
local K = {}
-- The token fields the lease path reads for this call's pool, when they are more than TOKEN_HOT
-- (`use_quota_fields`); nil otherwise. Reset by `begin`.
local HOT, HOT_SET

local function clock()
  if ARGV[1] ~= nil and ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function begin(keys, args)
  KEYS, ARGV = keys, args
  K.cfg, K.ready, K.cool, K.leases, K.exp, K.ids, K.jobs, K.base =
    keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], keys[7], keys[8]
  NOW = clock()
  HOT, HOT_SET = nil, nil
end

local function num(v, d)
  local n = tonumber(v)
  if n == nil then return d end
  return n
end

-- A pool setting. vault-core writes every setting with its default applied; the functions
-- never invent one, so a missing setting is an error, not a silent default.
local function setting(c, name)
  local v = tonumber(c[name])
  if v == nil then error('pool setting ' .. name .. ' is missing (written by an older vault? vault-api completes it at start-up)') end
  return v
end

local function hgetall(key)
  local raw = redis.call('HGETALL', key)
  if #raw == 0 then return nil end
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
  return h
end

-- The storage layout this library reads and writes, in the pool config's `layout_version`
-- (absent: a pool written before internal ids; '2': before the fingerprint index; `vaultctl
-- migrate` converts both).
local LAYOUT_VERSION = '3'

local function tkey(id) return K.base .. 't:' .. id end
-- The token's sealed secret, as bytes (nonce, ciphertext, tag): in a key of its own so that the
-- token hash stays small enough for a listpack, and read only when a lease hands it out.
local function seckey(id) return K.base .. 'sec:' .. id end

-- The internal id of the token the user calls `token_id`, or nil.
local function internal_id(token_id)
  local id = redis.call('HGET', K.ids, token_id)
  if id then return id end
  return nil
end

-- The internal id of the token deposited `n`th, and whether `id` is one rather than a user's
-- token id (which never holds `#`).
local function internal_of(n) return '#' .. n end
local function is_internal(id) return string.sub(id, 1, 1) == '#' end

-- The deposit order of a token: the number in its internal id.
local function deposit_seq(id) return tonumber(string.sub(id, 2)) end

-- What `reconcile` needs to know of a token as it was read: where it is placed (`at`) and what
-- its ready score was made of, so that an index entry that would not change is not rewritten.
local function loaded(t)
  if t ~= nil then
    rawset(t, '_lla0', t.last_leased_at)
    rawset(t, '_state0', t.state)
  end
  return t
end

-- Token `id` (internal) as a table of all its fields, or nil when there is no such token.
local function load_token(id)
  return loaded(hgetall(tkey(id)))
end

-- The user's token `token_id`: its internal id and all its fields, or nil.
local function find_token(token_id)
  local id = internal_id(token_id)
  if id == nil then return nil, nil end
  local t = load_token(id)
  if t == nil then return nil, nil end
  return id, t
end

-- The token fields the lease path (acquire, release, renew, rotate and the rules they apply)
-- reads: one HMGET instead of reading the whole hash into Lua. A unit test
-- (`the_lease_path_reads_every_token_field_it_uses`, vault-core/src/scripts.rs) derives the fields
-- the rules read from their code and fails when one is missing here; a field read anyway
-- loads the rest of the hash (right, only slower).
local TOKEN_HOT = { 'id', 'state', 'view', 'at', 'expires_at', 'used', 'reserved', 'win_end',
  'leases', 'lid', 'cool_until', 'quota_limit', 'strikes', 'last_leased_at', 'key_id', 'proxy',
  'proxy_ct', 'proxy_key_id', 'binding_fp', 'refresh_kind', 'pl' }

local TOKEN_HOT_SET = {}
for i = 1, #TOKEN_HOT do TOKEN_HOT_SET[TOKEN_HOT[i]] = true end

-- The token fields of the pool's extra quotas (config `c`): defined by the quota rule
-- (rules/quota.lua), which owns how quotas are stored.
local quota_fields_of
-- What happens when a pipeline's token leaves rotation: defined by the share rule
-- (rules/pipeline.lua), called by `reconcile`.
local share_left

local function use_quota_fields(c)
  if c.quotas == nil or c.quotas == '' then return end
  HOT, HOT_SET = {}, {}
  for i = 1, #TOKEN_HOT do HOT[i] = TOKEN_HOT[i] end
  for _, f in ipairs(quota_fields_of(c)) do HOT[#HOT + 1] = f end
  for i = 1, #HOT do HOT_SET[HOT[i]] = true end
end

-- Token `id` (internal) for the lease path (see TOKEN_HOT), or nil when there is no such token.
local function load_token_hot(id)
  local key = tkey(id)
  local hot, hot_set = HOT or TOKEN_HOT, HOT_SET or TOKEN_HOT_SET
  local raw = redis.call('HMGET', key, unpack(hot))
  -- `id` is written at deposit: without it there is no token.
  if not raw[1] then return nil end
  local t = {}
  for i = 1, #hot do
    if raw[i] then t[hot[i]] = raw[i] end
  end
  loaded(t)
  return setmetatable(t, { __index = function(tbl, field)
    -- A listed field that is absent is at its default (not stored): nothing more to read.
    if hot_set[field] or string.sub(field, 1, 1) == '_' then return nil end
    setmetatable(tbl, nil)
    local all = redis.call('HGETALL', key)
    -- Fields already in the table may have been changed by this call: they stay.
    for i = 1, #all, 2 do
      if rawget(tbl, all[i]) == nil then rawset(tbl, all[i], all[i + 1]) end
    end
    return rawget(tbl, field)
  end })
end

-- Live leases: one hash per pool, lease id -> the lease record (see `lease_record` in
-- rules/leases.lua); the `leases` zset holds their deadlines.
local function leasedata_key() return K.base .. 'leasedata' end

-- A token's live leases: the first in its hash's `lid` field (written with the token's other
-- changes, no command of its own: at the default of one lease per token that is every lease),
-- the others in the set `tl:<id>`.
local function tlkey(id) return K.base .. 'tl:' .. id end

-- Every live lease id of token `id`.
local function token_lease_ids(id)
  local lids = redis.call('SMEMBERS', tlkey(id))
  local first = redis.call('HGET', tkey(id), 'lid')
  if first and first ~= '' then lids[#lids + 1] = first end
  return lids
end

local function vkey(view) return K.base .. 'v:' .. view end

local function stats_key() return K.base .. 'stats' end
-- Leases granted per minute (written by vault-api in batches, read by status; see store/rate.rs).
local function rate_key() return K.base .. 'rate' end
-- Leases per token in one minute (written by vault-api with the rate, read by status).
local function heat_key(minute) return K.base .. 'heat:' .. minute end
local function idem_key(idem) return K.base .. 'idem:' .. idem end
local function session_key(session) return K.base .. 's:' .. session end
local function sunset_key() return K.base .. 'sunset' end
-- Scheduled rotation (rules/age.lua): `aged` tokens in rotation by the time their age counts
-- from (deposit or last refresh, ms); `rotating` the tokens being rotated on schedule now.
local function aged_key() return K.base .. 'aged' end
local function rotating_key() return K.base .. 'rotating' end
-- Pipelines (rules/pipeline.lua): `pipelines` zset name -> deadline ms; per pipeline `pl:<name>`
-- its record (hash), `pm:<name>` its tokens (set), `pr:<name>` its leasable tokens (zset, as
-- `ready`), `pc:<name>` candidates while it is being assigned (zset, score = preference);
-- `plshort` the pipelines under strength, `plwork` those being assigned or given back (sets),
-- `plnews` what happened to shares, for vault-core to announce (list of JSON).
local function pipelines_key() return K.base .. 'pipelines' end
local function pl_key(name) return K.base .. 'pl:' .. name end
local function pm_key(name) return K.base .. 'pm:' .. name end
local function pr_key(name) return K.base .. 'pr:' .. name end
local function pc_key(name) return K.base .. 'pc:' .. name end
local function plshort_key() return K.base .. 'plshort' end
local function plwork_key() return K.base .. 'plwork' end
local function plnews_key() return K.base .. 'plnews' end
-- The set of leasable tokens token `t` belongs in: its pipeline's, or the pool's free `ready`.
local function ready_key(t)
  local pl = t.pl
  if pl ~= nil and pl ~= '' then return pr_key(pl) end
  return K.ready
end
local function seq_key() return K.base .. 'seq' end
-- Deposits in flight (zset: token id -> reservation deadline ms): a deposit reserves its ids
-- (deposit_reserve.lua), then writes them (deposit.lua), each in batches so that no call runs
-- long; a reservation lapses at its deadline (the vault that made it stopped midway).
local function depositing_key() return K.base .. 'depositing' end

-- Whether deposit token `d` is in the pool already: false when it is not, true when it is with
-- the same secret (by fingerprint: depositing it again changes nothing), nil when another token
-- holds its id.
local function deposited(d)
  local id = internal_id(d.id)
  if id == nil then return false end
  local fp = redis.call('HGET', tkey(id), 'fingerprint')
  if not fp then return false end
  if fp == d.fingerprint then return true end
  return nil
end

-- The fingerprint index (layout 3): which tokens of the pool hold the secret of a fingerprint, so
-- a credential revoked by fingerprint (a global revocation) is found in every pool without a
-- scan. Hash `fps`: fingerprint -> one internal id (almost always the only one); a secret held
-- by more tokens has the others in the set `fpx:<fingerprint>`. Every change is O(1), however
-- many tokens share a secret. A revoked token leaves the index (revocation is final).
local function fps_key() return K.base .. 'fps' end
local function fpx_key(fp) return K.base .. 'fpx:' .. fp end

local function fp_add(id, fp)
  if fp == nil or fp == '' then return end
  if redis.call('HSETNX', fps_key(), fp, id) == 1 then return end
  if redis.call('HGET', fps_key(), fp) ~= id then redis.call('SADD', fpx_key(fp), id) end
end

local function fp_del(id, fp)
  if fp == nil or fp == '' then return end
  if redis.call('HGET', fps_key(), fp) == id then
    local next_id = redis.call('SPOP', fpx_key(fp))
    if next_id then
      redis.call('HSET', fps_key(), fp, next_id)
    else
      redis.call('HDEL', fps_key(), fp)
    end
  else
    redis.call('SREM', fpx_key(fp), id)
  end
end

-- Up to `max` internal ids of the pool's tokens whose secret has fingerprint `fp`.
local function fp_ids(fp, max)
  local first = redis.call('HGET', fps_key(), fp)
  if not first then return {} end
  local out = { first }
  if max > 1 then
    for _, x in ipairs(redis.call('SRANDMEMBER', fpx_key(fp), max - 1)) do out[#out + 1] = x end
  end
  return out
end

local function reply(t) return cjson.encode(t) end

-- An argument that is JSON, or "" for none (nil).
local function json_arg(v)
  if v == nil or v == '' then return nil end
  return cjson.decode(v)
end

-- An answer that hands out a sealed secret: the JSON, then the secret's bytes (vault-core puts
-- them into the answer's `lease`; JSON cannot carry bytes).
local function reply_with_secret(t, id)
  return { cjson.encode(t), redis.call('GET', seckey(id)) or '' }
end

-- A value as Redis stores it. Integers (times in ms, counters) are written with '%d': Lua's
-- tostring formats every number as a float ('%.14g'), three times slower (about half a
-- microsecond for a time in ms), and as 1e+14 from 10^14 on.
local function str(v)
  if type(v) == 'number' and v == math.floor(v) and v > -2^53 and v < 2^53 then
    return string.format('%d', v)
  end
  return tostring(v)
end

-- What a token's fields are when not stored: every reader applies these defaults (an absent
-- counter is 0, an absent generation 1, no labels, no refresh), so a token is stored without them.
local TOKEN_DEFAULTS = { used = '0', reserved = '0', win_end = '0', leases = '0',
  cool_until = '0', strikes = '0', last_leased_at = '0', generation = '1', expires_at = '0',
  labels = '{}', refresh_kind = 'none', refresh_attempts = '0', refresh_pub = '{}' }

-- A token's `fields` (field -> value) as its hash stores them: {field1, value1, ...} without
-- those at their defaults or empty (and no refresh key id without refresh credentials).
local function stored_fields(fields)
  local fv = {}
  for k, v in pairs(fields) do
    v = str(v)
    if v ~= '' and TOKEN_DEFAULTS[k] ~= v
      and not (k == 'refresh_key_id' and (fields.refresh_ct or '') == '') then
      fv[#fv + 1] = k
      fv[#fv + 1] = v
    end
  end
  return fv
end

local function fail(code, extra)
  local t = extra or {}
  t.err = code
  return cjson.encode(t)
end

-- The pool's config, or nil when there is no pool. A pool being deleted (in batches, by
-- pool_op.lua) is gone for every transition from the moment its deletion starts.
--
-- `load_cfg` reads only what the rules use (HMGET: a third of the time of reading the whole
-- hash on every call); transitions that need the rest (operation bookkeeping, rotation, the
-- refresh record) use `load_cfg_all`.
-- The config hash is read on every call: its 14 rule fields out of about 45. Redis keeps a hash
-- that small as a listpack and searches it field by field (those 14: ~5 µs); one value longer
-- than `hash-max-listpack-value` (64 bytes by default) makes it a hash table for good (~1 µs).
-- `write_cfg` writes this field with every config (pool_upsert, pool_complete).
local CFG_LAYOUT = 'a hash table, not a listpack: read on every call (lua/rules/base.lua, CFG_LAYOUT)'

-- Write config fields (field -> string), and the layout field with them.
local function write_cfg(fields)
  for k, v in pairs(fields) do redis.call('HSET', K.cfg, k, v) end
  redis.call('HSET', K.cfg, 'layout', CFG_LAYOUT)
end
local CFG_FIELDS = { 'frozen', 'op', 'quota_limit', 'quota_window_s', 'quota_reserve',
  'max_leases_per_token', 'lease_ttl_s', 'max_lease_ttl_s', 'min_token_ttl_s', 'strategy',
  'quarantine_after_strikes', 'session_ttl_s', 'refresh_margin_s', 'rotation_id', 'quotas',
  'cost_estimates' }
local function load_cfg()
  local raw = redis.call('HMGET', K.cfg, unpack(CFG_FIELDS))
  -- `frozen` is written when a pool is created: without it there is no pool.
  if not raw[1] then return nil end
  local c = {}
  for i = 1, #CFG_FIELDS do
    if raw[i] then c[CFG_FIELDS[i]] = raw[i] end
  end
  if c.op == 'delete' then return nil end
  use_quota_fields(c)
  return c
end
local function load_cfg_all()
  local c = hgetall(K.cfg)
  if c ~= nil and c.op == 'delete' then return nil end
  if c ~= nil then use_quota_fields(c) end
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
  return str(id)
end

local function op_busy(c)
  return fail('conflict', { detail = 'a pool operation (' .. c.op .. ') is running; retry when it is done' })
end

-- Whether `value` is what token field `field` reads as when it is absent (TOKEN_DEFAULTS; an
-- empty `lid`, pipeline or sliding count, `s:`; a zero quota count, window end or reservation, `u:`, `w:`,
-- `r:`): such a value is removed rather than stored. An idle token then holds no zero counters,
-- which keeps a token hash with a few quotas in a smaller allocation (BENCHMARKS, issue 23).
local function at_default(field, value)
  local d = TOKEN_DEFAULTS[field]
  if d ~= nil then return value == d end
  local p = string.sub(field, 1, 2)
  if value == '' then return field == 'lid' or field == 'pl' or p == 's:' end
  return value == '0' and (p == 'u:' or p == 'w:' or p == 'r:')
end

-- Set a token field in Redis and in the in-memory copy together.
local function put(id, t, field, value)
  t[field] = str(value)
  if at_default(field, t[field]) then
    redis.call('HDEL', tkey(id), field)
  else
    redis.call('HSET', tkey(id), field, t[field])
  end
end
-- Several fields at once, in one HSET (each call costs Redis CPU of its own; fields back at
-- their defaults in one HDEL): `fv` is
-- {field1, value1, field2, value2, ...}.
local function put_all(id, t, fv)
  local set, drop = {}, nil
  for i = 1, #fv, 2 do
    local f, v = fv[i], str(fv[i + 1])
    t[f] = v
    if at_default(f, v) then
      drop = drop or {}
      drop[#drop + 1] = f
    else
      set[#set + 1] = f
      set[#set + 1] = v
    end
  end
  if #set > 0 then redis.call('HSET', tkey(id), unpack(set)) end
  if drop ~= nil then redis.call('HDEL', tkey(id), unpack(drop)) end
end
-- Set fields in the in-memory copy only: `reconcile`, which every transition calls after
-- changing a token, writes them together with its own (one HSET for the whole change), with
-- their values as they are then (a later `put` of the same field wins). Only for a change that
-- `reconcile` follows in the same call.
local function stage(t, fv)
  local pending = rawget(t, '_pending')
  if pending == nil then
    pending = {}
    rawset(t, '_pending', pending)
  end
  for i = 1, #fv, 2 do
    rawset(t, fv[i], str(fv[i + 1]))
    pending[#pending + 1] = fv[i]
  end
end
