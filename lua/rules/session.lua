-- session.lua: the sticky-session rule — a lease that names a `session` gets the session's token
-- again while that token is eligible; the session lasts `session_ttl_s` after its last lease.

-- The session's token when it can take this lease, else nil.
local function session_token(o, c, need_ttl)
  if o.session == '' then return nil, nil end
  local sid = redis.call('GET', session_key(o.session))
  -- A session kept by a vault older than internal ids names a user's token id (no `#`): it is
  -- let go, like an expired session.
  if sid and is_internal(sid) and sid ~= o.exclude then
    local t = load_token_hot(sid)
    if t ~= nil and in_share(t, o.pipeline) and eligible(sid, t, c, o.units, o.costs, need_ttl) then
      return sid, t
    end
  end
  return nil, nil
end

local function session_keep(o, id, c)
  if o.session ~= '' then
    redis.call('SET', session_key(o.session), id, 'PX', setting(c, 'session_ttl_s') * 1000)
  end
end
