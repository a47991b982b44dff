-- Convergence after a burst: one uploader with the built-in HTTP sender PUTs to the
-- embedded receiver (wsup.receiver, its own thread) while the script enqueues N
-- patches as fast as it can. The burst runs in batches of B enqueues; between
-- batches the script lets the loop take one turn (wsup.sleep(PAUSE_MS)), so PUTs are
-- started and answered during the burst as they would be in a busy worker (a burst
-- with no loop turn at all would coalesce into a single PUT and prove nothing).
-- Measured: the time from the last enqueue to the moment the uploader has nothing
-- pending or in flight (up:flush()), i.e. the response to the PUT that carried the
-- final state; the receiver applies a PUT before it answers. The receiver's state is
-- then compared with the state the patches add up to.
--
-- Patch i: worker_status alternates, external_metadata = { seq = i, ["k" .. i % 8] = i },
-- internal_metadata = { n = i } every 1000th patch.
--
-- Run: build/wsup bench/burst.lua [N] [B] [PAUSE_MS] [FLUSH_MS]
--   -> "converge_ms=<t> requests=<r> burst_s=<s> enqueue_per_s=<x> state_ok=<true|false> ..."
local wsup = require "wsup"

local N = tonumber(arg[1]) or 1000000
local B = tonumber(arg[2]) or 1000
local PAUSE_MS = tonumber(arg[3]) or 0
local FLUSH_MS = tonumber(arg[4]) or 10000 -- give up (and fail) after this long

local rcv = assert(wsup.receiver { host = "127.0.0.1", port = 0 })
local up = wsup.uploader { url = rcv.url .. "/worker/burst", timeout_ms = 30000 }

local turns = 0
local t0 = wsup.time_us()
local c0 = os.clock()
for i = 1, N do
  local status, md = i % 2 == 1 and "busy" or "idle", { seq = i, ["k" .. (i % 8)] = i }
  if i % 1000 == 0 then
    up:enqueue { worker_status = status, external_metadata = md, internal_metadata = { n = i } }
  else
    up:enqueue { worker_status = status, external_metadata = md }
  end
  if i % B == 0 and i < N then
    wsup.sleep(PAUSE_MS)
    turns = turns + 1
  end
end
local t1 = wsup.time_us()
local c1 = os.clock()
local before = up:stats().attempts
local flushed = up:flush(FLUSH_MS)
local t2 = wsup.time_us()

-- The state the N patches add up to.
local want = { worker_status = N % 2 == 1 and "busy" or "idle", external_metadata = { seq = N },
  internal_metadata = { n = N - N % 1000 } }
for k = 0, 7 do
  local last = N - ((N - k) % 8) -- the last i <= N with i % 8 == k
  if last >= 1 then want.external_metadata["k" .. k] = last end
end
if N < 1000 then want.internal_metadata = nil end

local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local got = rcv:state("/worker/burst")
local s = up:stats()
local rs = rcv:stats()
print(("converge_ms=%.2f requests=%d during_burst=%d after_burst=%d burst_s=%.3f enqueue_per_s=%.0f"
  .. " burst_cpu_s=%.3f turns=%d flushed=%s state_ok=%s server_requests=%d")
  :format((t2 - t1) / 1000, s.attempts, before, s.attempts - before, (t1 - t0) / 1e6, N / ((t1 - t0) / 1e6),
    c1 - c0, turns, tostring(flushed), tostring(same(got, want)), rs.requests))
up:close()
rcv:close()
os.exit(flushed and same(got, want) and 0 or 1)
