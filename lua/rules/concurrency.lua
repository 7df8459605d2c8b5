-- concurrency.lua: the concurrency rule — at most `max_leases_per_token` live leases per token.

local function max_leases(c) return num(c.max_leases_per_token, 1) end
