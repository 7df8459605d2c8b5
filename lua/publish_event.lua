-- publish_event.lua: append an event to the vault-wide event stream and publish it, in one
-- step, so a subscriber never sees a notice whose stream entry does not exist yet (replays by
-- Last-Event-ID read the stream). Not a pool transition: it takes its own keys (no `begin`).
-- KEYS[1] the event stream (tv:events); KEYS[2] the pub/sub channel (tv:events).
-- ARGV[1] approximate cap of the stream; ARGV[2] the event as JSON.
-- Returns the entry id.
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[2])
redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[2])
return id
