-- Reproducer (found by the soak with SOAK_MIXED=1): under a merge key, coalescing a
-- non-object (here "x"; null behaves the same) and then an object sends the object alone,
-- which the server merges into the object it had, instead of replacing it as the two
-- patches sent one after the other do. Exit 1 while the bug is there.
-- Run: build/wsup soak/repro_merge_scalar.lua
local wsup = require "wsup"

local r <close> = assert(wsup.receiver())

local function run(path, coalesce)
  local up <close> = wsup.uploader { url = r.url .. path }
  up:enqueue { external_metadata = { a = 1 } }
  assert(up:flush(2000))
  up:enqueue { external_metadata = "x" }
  if not coalesce then assert(up:flush(2000)) end
  up:enqueue { external_metadata = { b = 2 } }
  assert(up:flush(2000))
  local keys = {}
  for k, v in pairs(r:state(path).external_metadata) do keys[#keys + 1] = k .. "=" .. tostring(v) end
  table.sort(keys)
  return table.concat(keys, ",")
end

local apart, together = run("/worker/apart", false), run("/worker/together", true)
print("sent one by one: external_metadata = {" .. apart .. "}")    -- {b=2}
print("coalesced:       external_metadata = {" .. together .. "}") -- {a=1,b=2} while the bug is there
return apart == together and 0 or 1
