-- wsup: the Lua half of the module. The C core (wsup_core) owns the loop, timers
-- and uploaders; this file is where pure-Lua helpers join them.
local core = require "wsup_core"

local wsup = {}
for k, v in pairs(core) do wsup[k] = v end

wsup._VERSION = "wsup " .. core.version

return wsup
