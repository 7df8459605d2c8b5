-- pool_op.lua: one batch of the pool's running whole-pool operation, so that no script walks a
-- whole pool: up to `batch` tokens from the stored HSCAN cursor (over `tokens`), then the cursor moves on; the
-- batch that ends the scan finishes the operation. Any number of drivers may call it (the
-- replica that started the operation, every janitor): each batch goes on where the last ended,
-- and every step is idempotent (HSCAN may return a token twice).
--   reconfigure  every token re-placed under the pool's current rules
--   rotate       active tokens deposited before it started (deposit_seq <= op_max_seq) and not
--                refreshed since become deprecated, with a refresh job, revoked at the sunset
--   cancel       the tokens rotation op_rotation deprecated are active again
--   delete       every token, its leases and job records go; at the end the pool's keys
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::PoolOp` (vault-core), read here as locals of the same names.
-- `op_id` is the operation the caller drives ("" = whichever runs).
-- Returns {"op","done","affected"}. When the caller's operation is over (finished by another
-- driver, or superseded), {"op":"","done":true,"affected":its count} from the record of the
-- last finished one (0 when superseded or unknown).
local c = hgetall(K.cfg)
local mine = op_id
if c == nil or not op_running(c) or (mine ~= '' and c.op_id ~= mine) then
  local last = 0
  if c ~= nil and mine ~= '' and c.op_last_id == mine then last = num(c.op_last_affected, 0) end
  return reply({ op = '', done = true, affected = last })
end
local op = c.op
local res = redis.call('HSCAN', K.ids, c.op_cursor or '0', 'COUNT', batch)
-- The user's token ids and their internal ids, in pairs.
local cursor, pairs_found = res[1], res[2]
local sunset_zset = sunset_key()

local function deprecate(id, t)
  if t.state ~= 'active' or deposit_seq(id) > num(c.op_max_seq, 0)
    or num(t.refreshed_at, 0) >= num(c.rotation_started_at, 0) then return 0 end
  put(id, t, 'state', 'deprecated')
  put(id, t, 'sunset_at', c.rotation_sunset_at)
  put(id, t, 'rotation', c.rotation_id)
  redis.call('ZADD', sunset_zset, num(c.rotation_sunset_at, 0), id)
  if refreshable(t) then enqueue_job(id, t) end
  reconcile(id, t, c)
  return 1
end

local function restore(id, t)
  if t.rotation ~= c.op_rotation or t.state ~= 'deprecated' then return 0 end
  put(id, t, 'state', 'active')
  put(id, t, 'sunset_at', '')
  put(id, t, 'rotation', '')
  redis.call('ZREM', sunset_zset, id)
  if t.job_id == nil or t.job_id == '' then redis.call('ZREM', queue_of(t), id) end
  reconcile(id, t, c)
  return 1
end

local function delete(token_id, id)
  if redis.call('HDEL', K.ids, token_id) == 0 then return 0 end
  local lids = token_lease_ids(id)
  if #lids > 0 then redis.call('HDEL', leasedata_key(), unpack(lids)) end
  local f = redis.call('HMGET', tkey(id), 'job_id', 'fingerprint')
  if f[1] and f[1] ~= '' then redis.call('DEL', job_key(f[1])) end
  if f[2] then fp_del(id, f[2]) end
  redis.call('DEL', tkey(id), seckey(id), tlkey(id))
  return 1
end

local affected = 0
for i = 1, #pairs_found, 2 do
  local id = pairs_found[i + 1]
  if op == 'delete' then
    affected = affected + delete(pairs_found[i], id)
  else
    local t = load_token(id)
    if t ~= nil then
      if op == 'reconfigure' then
        if in_rotation(t) then due_add(id, t, c) end
        -- Tokens of a pool older than scheduled rotation are indexed by age here.
        age_index(id, t)
        -- Placed anew: the rules that decide where, and its ready score, may have changed.
        t.at = nil
        reconcile(id, t, c)
        affected = affected + 1
      elseif op == 'rotate' then
        affected = affected + deprecate(id, t)
      elseif op == 'cancel' then
        affected = affected + restore(id, t)
      end
    end
  end
end
local total = num(c.op_affected, 0) + affected
if cursor ~= '0' then
  redis.call('HSET', K.cfg, 'op_cursor', cursor, 'op_affected', total)
  return reply({ op = op, done = false, affected = total })
end

-- The scan is complete: finish the operation.
local op_fields = { 'op', 'op_id', 'op_cursor', 'op_affected', 'op_started_at', 'op_max_seq', 'op_rotation' }
if op ~= 'delete' then redis.call('HSET', K.cfg, 'op_last_id', c.op_id, 'op_last_affected', total) end
if op == 'delete' then
  local keys = { K.cfg, K.ready, K.cool, K.leases, leasedata_key(), K.exp, K.ids, K.jobs, stats_key(), rate_key(), seq_key(),
    depositing_key(), fps_key(), sunset_zset, due_key(), aged_key(), rotating_key(), xjobs_key(), K.jobs .. ':claimed', xjobs_key() .. ':claimed' }
  for _, name in ipairs(redis.call('ZRANGE', pipelines_key(), 0, -1)) do
    for _, k in ipairs({ pl_key(name), pm_key(name), pr_key(name), pc_key(name) }) do keys[#keys + 1] = k end
  end
  for _, k in ipairs({ pipelines_key(), plshort_key(), plwork_key(), plnews_key() }) do keys[#keys + 1] = k end
  -- The per-minute lease counts of the last minutes (store/rate.rs keeps 3; they expire anyway).
  local minute = math.floor(NOW / 60000)
  for m = minute - 4, minute + 1 do keys[#keys + 1] = heat_key(m) end
  for _, view in ipairs(VIEW_STATES) do
    keys[#keys + 1] = vkey(view)
  end
  -- UNLINK: large index keys are freed off Redis's main thread.
  redis.call('UNLINK', unpack(keys))
elseif op == 'rotate' then
  redis.call('HSET', K.cfg, 'rotation_total', total)
  redis.call('HDEL', K.cfg, unpack(op_fields))
elseif op == 'cancel' then
  redis.call('HDEL', K.cfg, 'rotation_id', 'rotation_started_at', 'rotation_sunset_at', 'rotation_reason',
    'rotation_total', 'rotation_refreshed')
  redis.call('HDEL', K.cfg, unpack(op_fields))
else
  redis.call('HDEL', K.cfg, unpack(op_fields))
end
return reply({ op = op, done = true, affected = total })
