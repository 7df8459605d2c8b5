-- concurrency.lua: the concurrency rule — at most `max_leases_per_token` live leases per token.

local function max_leases(c) return setting(c, 'max_leases_per_token') end
