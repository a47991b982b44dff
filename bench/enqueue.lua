-- Enqueue throughput into one uploader whose send never settles (a stalled server),
-- the same workload as ../shared/peer/bench_enqueue.mjs: every enqueue after the
-- first coalesces into pending, whose metadata cycles over K keys.
--
-- As in the seed, the first patch goes in flight before the timed enqueues pile up in
-- pending: the seed's first enqueue starts its send synchronously; wsup starts a send
-- on the loop's next turn, so the script enqueues one patch and runs one loop turn
-- (wsup.sleep(0)); the send is a task that yields forever. The timed loop then makes
-- N enqueues, all of which coalesce into pending (the seed times its first enqueue
-- too; one enqueue in a million changes nothing).
--
-- Run: build/wsup bench/enqueue.lua N K   -> "ops_per_cpu_s=<x> pending_keys=<k>"
-- (enqueues per CPU-second of the process, os.clock(), as the seed's process.cpuUsage())
local wsup = require "wsup"

local N = tonumber(arg[1]) or 1000000
local K = tonumber(arg[2]) or 8

local up = wsup.uploader { send = function() coroutine.yield() end } -- never settles
up:enqueue { worker_status = "idle", external_metadata = { first = true } }
wsup.sleep(0) -- one loop turn: the first patch is now in flight
assert(up:stats().inflight and not up:pending(), "the first send did not start")

local c0 = os.clock()
for i = 0, N - 1 do
  up:enqueue { worker_status = i % 2 == 1 and "busy" or "idle", external_metadata = { ["k" .. (i % K)] = i } }
end
local dt = os.clock() - c0

local keys = 0
for _ in pairs(up:pending().external_metadata) do keys = keys + 1 end
print(("ops_per_cpu_s=%.0f pending_keys=%d"):format(N / dt, keys))
up:close()
os.exit(0)
