-- migrate_layout.lua: convert up to `batch` tokens of a pool to this layout (see
-- rules/base.lua), from one written by a vault before internal ids (layout 1: token hashes
-- `t:<token id>` with the sealed secret in base64 inside, the `ids` set, a hash per lease
-- `l:<lease id>`, indexes holding token ids) or before the fingerprint index (layout 2: the
-- index is built, the scan's cursor kept in the config's `migrate_cursor`). Run by `vaultctl migrate` in calls of a few milliseconds each, until it
-- answers done; each call converts whole tokens, so a migration stopped midway goes on where it
-- stopped. Vaults refuse to start on a pool not converted yet (`Store::check_layout`).
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::MigrateLayout` (vault-core), read here as locals of the same names.
-- Returns {"converted":n,"left":n,"done":bool} | {"err":"pool_not_found"}.
local cfg = hgetall(K.cfg)
if cfg == nil then return fail('pool_not_found') end
if cfg.layout_version == LAYOUT_VERSION then return reply({ converted = 0, left = 0, done = true }) end
if cfg.layout_version == '2' then
  local scan = redis.call('HSCAN', K.ids, cfg.migrate_cursor or '0', 'COUNT', batch)
  local indexed = 0
  for i = 2, #scan[2], 2 do
    local id = scan[2][i]
    local t = redis.call('HMGET', tkey(id), 'fingerprint', 'state')
    if t[2] ~= 'revoked' then fp_add(id, t[1]) end
    indexed = indexed + 1
  end
  if scan[1] ~= '0' then
    redis.call('HSET', K.cfg, 'migrate_cursor', scan[1])
    return reply({ converted = indexed, left = redis.call('HLEN', K.ids), done = false })
  end
  redis.call('HDEL', K.cfg, 'migrate_cursor')
  redis.call('HSET', K.cfg, 'layout_version', LAYOUT_VERSION)
  return reply({ converted = indexed, left = 0, done = true })
end
local old_ids = K.base .. 'ids'

local B64 = {}
local alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
for i = 1, 64 do B64[string.byte(alphabet, i)] = i - 1 end
-- Standard base64 (with padding) to bytes.
local function unbase64(s)
  local out = {}
  for i = 1, #s - 3, 4 do
    local a, b, x, y = string.byte(s, i, i + 3)
    local vx, vy = B64[x], B64[y]
    local v = B64[a] * 262144 + B64[b] * 4096 + (vx or 0) * 64 + (vy or 0)
    local b1, b2, b3 = math.floor(v / 65536), math.floor(v / 256) % 256, v % 256
    if vx == nil then
      out[#out + 1] = string.char(b1)
    elseif vy == nil then
      out[#out + 1] = string.char(b1, b2)
    else
      out[#out + 1] = string.char(b1, b2, b3)
    end
  end
  return table.concat(out)
end

local INDEXES = { K.ready, K.cool, K.exp, due_key(), sunset_key(), K.jobs, xjobs_key() }

local function convert(token_id)
  local okey = K.base .. 't:' .. token_id
  local old = hgetall(okey)
  if old == nil then return 0 end
  local id = internal_of(tonumber(old.seq) or redis.call('INCR', seq_key()))
  local at = 'n'
  if redis.call('ZSCORE', K.ready, token_id) then at = 'r'
  elseif redis.call('ZSCORE', K.cool, token_id) then at = 'c' end
  for _, key in ipairs(INDEXES) do
    local score = redis.call('ZSCORE', key, token_id)
    if score then
      redis.call('ZREM', key, token_id)
      redis.call('ZADD', key, score, id)
    end
  end
  if old.view ~= nil and old.view ~= '' then
    redis.call('SREM', vkey(old.view), token_id)
    move_view(id, nil, old.view)
  end
  local otl = K.base .. 'tl:' .. token_id
  for _, lid in ipairs(redis.call('SMEMBERS', otl)) do
    local lkey = K.base .. 'l:' .. lid
    local l = hgetall(lkey)
    if l ~= nil then
      l.token = id
      lease_store(lid, l)
      redis.call('SADD', tlkey(id), lid)
    end
    redis.call('DEL', lkey)
  end
  if old.job_id ~= nil and old.job_id ~= '' and redis.call('EXISTS', job_key(old.job_id)) == 1 then
    redis.call('HSET', job_key(old.job_id), 'token', id, 'token_id', token_id)
  end
  local secret_ct = old.secret_ct or ''
  old.secret_ct, old.seq, old.at = nil, nil, at
  -- The old layout wrote every field of a fresh token; this one leaves out the defaults.
  redis.call('HSET', tkey(id), unpack(stored_fields(old)))
  redis.call('SET', seckey(id), unbase64(secret_ct))
  redis.call('HSET', K.ids, token_id, id)
  if old.state ~= 'revoked' then fp_add(id, old.fingerprint) end
  redis.call('DEL', okey, otl)
  return 1
end

local converted = 0
for _, token_id in ipairs(redis.call('SPOP', old_ids, batch)) do
  converted = converted + convert(token_id)
end
local left = redis.call('SCARD', old_ids)
if left == 0 then
  -- A whole-pool operation that was running scanned the old set: it starts its scan over.
  if cfg.op ~= nil and cfg.op ~= '' then redis.call('HSET', K.cfg, 'op_cursor', '0') end
  redis.call('HSET', K.cfg, 'layout_version', LAYOUT_VERSION)
end
return reply({ converted = converted, left = left, done = left == 0 })
