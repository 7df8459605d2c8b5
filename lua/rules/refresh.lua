-- refresh.lua: refresh scheduling and the claims behind refresh jobs.

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

-- Whether the external login workers renew token `t`: an `external` grant, or no grant at all
-- while it is rotated on schedule (rules/age.lua). Everything else the refresher renews.
local function by_login_workers(t)
  return t.refresh_kind == 'external' or (not refreshable(t) and t.rotation == SCHEDULED)
end

-- The queue of `t`'s refresh jobs: where they are queued, claimed, completed and failed.
local function queue_of(t)
  if by_login_workers(t) then return xjobs_key() end
  return K.jobs
end

local function margin_ms(c) return setting(c, 'refresh_margin_s') * 1000 end

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

-- Forget every refresh schedule of a token (revoked, deleted, quarantined), its age too.
local function unschedule(id)
  redis.call('ZREM', K.jobs, id)
  redis.call('ZREM', xjobs_key(), id)
  redis.call('ZREM', due_key(), id)
  age_forget(id)
end

-- Whether a refresh job of token `t` may be claimed: it has a grant, or the login workers
-- renew it.
local function renewable(t)
  return refreshable(t) or by_login_workers(t)
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

-- A token (re)entering rotation: indexed by expiry and refresh due time and placed, unless it
-- is already too short-lived, in which case it leaves rotation at once.
local function back_in_rotation(id, t, c)
  if too_short_lived(t, c) then
    out_of_rotation(id, t, c)
  else
    exp_add(id, t)
    due_add(id, t, c)
    age_index(id, t)
    reconcile(id, t, c)
  end
end

-- The claim behind a refresh job, checked: returns (job, token id, token) or (nil, error).
-- A job that was taken over, a token refreshed by another path (generation moved) or revoked
-- makes the caller's result stale; its job record is dropped either way.
local function load_claim(job_id, allow_expired)
  local j = hgetall(job_key(job_id))
  if j == nil then return nil, fail('job_gone') end
  local t = load_token(j.token)
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
