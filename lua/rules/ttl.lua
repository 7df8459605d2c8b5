-- ttl.lua: the TTL-margin rule — a token is leased only with `min_token_ttl_s` of life left.

local function min_ttl_ms(c)
  return setting(c, 'min_token_ttl_s') * 1000
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
