-- freeze.lua: the freeze rule — a frozen pool (the kill switch) grants no lease; freezing ends
-- every live lease (freeze.lua, in batches).

local function frozen(c) return c.frozen == '1' end
