-- A Lua send policy that prints what it would send, on a coalescing uploader.
-- Run: build/wsup examples/print_policy.lua
local wsup = require "wsup"

local up = wsup.uploader {
  name = "printer",
  base_delay_ms = 200,
  send = function(_, json)
    wsup.sleep(300) -- a slow "server": patches coalesce meanwhile
    print(("%6d ms  PUT /worker %s"):format(wsup.now(), json))
    return true
  end,
}

for i = 1, 20 do
  up:enqueue { worker_status = i % 2 == 0 and "busy" or "idle",
               external_metadata = { tick = i, at_us = wsup.now() * 1000 } }
  wsup.sleep(100)
end
up:flush()
local s = up:stats()
print(("%d enqueues became %d requests"):format(s.enqueued, s.attempts))
