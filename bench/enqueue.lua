-- Enqueue throughput into one uploader whose send never settles (a stalled server),
-- the same workload as ../shared/peer/bench_enqueue.mjs: every enqueue after the
-- first coalesces into pending, whose metadata cycles over K keys.
-- Run: build/wsup bench/enqueue.lua N K   -> "ops_per_cpu_s=<x> pending_keys=<k>"
local wsup = require "wsup"

local N = tonumber(arg[1]) or 1000000
local K = tonumber(arg[2]) or 8

local up = wsup.uploader { send = function() coroutine.yield() end } -- never settles

local c0 = os.clock()
for i = 0, N - 1 do
  up:enqueue { worker_status = i % 2 == 1 and "busy" or "idle", external_metadata = { ["k" .. (i % K)] = i } }
end
local dt = os.clock() - c0

local keys = 0
for _ in pairs(up:pending().external_metadata) do keys = keys + 1 end
print(("ops_per_cpu_s=%.0f pending_keys=%d"):format(N / dt, keys))
up:close()
