-- token_rows.lua: read tokens for metadata, listings and status (writes nothing): their stored
-- fields, and their quota as the quota rule sees it now (`quota_now`), so no reader recomputes it.
-- KEYS: the pool keys (see rules/base.lua).
-- ARGV[1] now ms or ""; ARGV[2] JSON list of the fields to read; ARGV[3..] token ids.
-- Returns {"rows":[{"fields":[value|null, ...], "quota":{used, reserved, limit?, win_end}}|{}...]}
--   in the order of the ids; a token that does not exist is {}.
-- | {"err":"pool_not_found"}.
local c = load_cfg()
if c == nil then return fail('pool_not_found') end
local fields = cjson.decode(ARGV[2])
local rows = {}
for i = 3, #ARGV do
  local key = tkey(ARGV[i])
  if redis.call('EXISTS', key) == 1 then
    local vals = redis.call('HMGET', key, unpack(fields))
    for j = 1, #fields do
      if vals[j] == false then vals[j] = cjson.null end
    end
    local q = redis.call('HMGET', key, 'used', 'reserved', 'win_end', 'quota_limit')
    local t = { used = q[1] or nil, reserved = q[2] or nil, win_end = q[3] or nil, quota_limit = q[4] or nil }
    rows[#rows + 1] = { fields = vals, quota = quota_now(t, c) }
  else
    rows[#rows + 1] = {}
  end
end
return reply({ rows = rows })
