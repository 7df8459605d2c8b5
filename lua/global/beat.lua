-- global/beat.lua: the global primary's clock (ms) into KEYS[1]. A region replica that holds
-- beat B holds every global entry written before B (replication keeps the primary's order).
local t = redis.call('TIME')
redis.call('SET', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return 1
