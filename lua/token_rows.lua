-- token_rows.lua: read tokens for metadata, listings and status (writes nothing): their stored
-- fields, and their quota as the quota rule sees it now (`quota_now`), so no reader recomputes it.
-- KEYS: the pool keys (see rules/base.lua).
-- Arguments: `scripts::TokenRows` (vault-core), read here as locals of the same names.
-- `ids` are the user's token ids or internal ones (`#<n>`).
-- Returns {"rows":[{"fields":[value|null, ...], "quota":{used, reserved, limit?, win_end},
--   "quotas":[{name, used, reserved, limit, win_end}...] (the pool's other quotas)}|{}...]}
--   in the order of the ids; a token that does not exist is {}.
-- | {"err":"pool_not_found"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
fields = cjson.decode(fields)
-- One read per token: the caller's fields, then what existence and the quota rule need.
local QUOTA_FIELDS = { 'state', 'used', 'reserved', 'win_end', 'quota_limit' }
for _, f in ipairs(quota_fields_of(c)) do QUOTA_FIELDS[#QUOTA_FIELDS + 1] = f end
local read = {}
for j = 1, #fields do read[j] = fields[j] end
for j = 1, #QUOTA_FIELDS do read[#fields + j] = QUOTA_FIELDS[j] end
local rows = {}
for _, given in ipairs(ids) do
  -- A user's token id, or an internal one (`#<n>`, as the view sets hold them).
  local id = given
  if not is_internal(given) then id = internal_id(given) or '' end
  local vals = redis.call('HMGET', tkey(id), unpack(read))
  local t = {}
  for j = 1, #QUOTA_FIELDS do t[QUOTA_FIELDS[j]] = vals[#fields + j] or nil end
  -- `state` is written at deposit: without it there is no token.
  if t.state ~= nil then
    local shown = {}
    for j = 1, #fields do
      if vals[j] == false then shown[j] = cjson.null else shown[j] = vals[j] end
    end
    local row = { fields = shown, quota = quota_now(t, c) }
    if #quotas_of(c) > 1 then row.quotas = quotas_now(t, c) end
    rows[#rows + 1] = row
  else
    rows[#rows + 1] = {}
  end
end
return reply({ rows = rows })
