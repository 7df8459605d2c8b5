-- publish_event.lua: append events to the vault-wide event stream and publish each, in one
-- step, so a subscriber never sees a notice whose stream entry does not exist yet (replays by
-- Last-Event-ID read the stream). Not a pool transition: it takes its own keys (no `begin`).
-- A transition's events come in one call (the caller sends at most `EVENT_BATCH` at a time), so
-- a freeze ending many leases costs a few calls, not one round trip per lease.
-- KEYS[1] the event stream (tv:events); KEYS[2] the pub/sub channel (tv:events).
-- ARGV[1] approximate cap of the stream; ARGV[2..] the events as JSON, in order.
-- Returns the last entry id.
local id
for i = 2, #ARGV do
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[i])
  redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[i])
end
return id
