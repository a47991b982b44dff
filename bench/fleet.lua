-- A fleet of U always-busy uploaders with wsup's built-in HTTP sender, PUTting to
-- BASE/worker/<i> until TOTAL PUTs were delivered; the same workload as
-- ../shared/peer/bench_fleet.mjs.
--
-- "Always busy": each uploader gets its next patch the moment its previous PUT is
-- answered, from a `classify` function (it runs on the loop once per response, before
-- the uploader decides what to do next), so the patch is pending when the uploader
-- looks and the next PUT starts at once. That is one enqueue per PUT, no timer and no
-- wasted enqueues; the seed does the same from its send's completion. The cost is one
-- Lua call per response (the response table plus a 2-key patch), which this bench
-- therefore includes in the CPU figure.
--
-- MODE "tick" instead enqueues into every uploader from one wsup.every(TICK_MS) timer
-- and leaves the HTTP sender pure C; most of those enqueues coalesce. Compare the two
-- with `build/wsup bench/fleet.lua 1000 200000 http://127.0.0.1:18080 tick`.
--
-- Run: build/wsup bench/fleet.lua U TOTAL BASE [hook|tick] [TICK_MS]
--   -> "puts_per_s=<x> cpu_us_per_put=<y> delivered=<n> failures=<f> wall_s=<s> cpu_s=<c>"
-- CPU is os.clock(): user + system time of the whole wsup process, from just before the
-- first enqueue to the TOTAL-th delivered PUT.
local wsup = require "wsup"

local U = tonumber(arg[1]) or 1000
local TOTAL = tonumber(arg[2]) or 100000
local BASE = arg[3] or "http://127.0.0.1:18080"
local MODE = arg[4] or "hook"
local TICK_MS = tonumber(arg[5]) or 5
assert(MODE == "hook" or MODE == "tick", "mode must be hook or tick")

local ups, seq = {}, {}
local delivered, failures = 0, 0
local t0, c0, t1, c1, counted
local ticker

local function finish()
  if t1 then return end
  t1, c1, counted = wsup.time_us(), os.clock(), delivered
  if ticker then ticker:stop() end
  for i = 1, U do ups[i]:close() end
end

local function next_patch(i)
  seq[i] = seq[i] + 1
  return { worker_status = "busy", external_metadata = { seq = seq[i], w = i } }
end

for i = 1, U do
  local opts = { url = ("%s/worker/%d"):format(BASE, i), name = "w" .. i, timeout_ms = 30000 }
  if MODE == "hook" then
    opts.classify = function(res)
      local ok = res.status and res.status >= 200 and res.status < 300
      if not ok then
        failures = failures + 1
        return "retry"
      end
      delivered = delivered + 1
      if delivered >= TOTAL then finish() else ups[i]:enqueue(next_patch(i)) end
      return "ok"
    end
  end
  ups[i] = wsup.uploader(opts)
  seq[i] = 0
end

t0, c0 = wsup.time_us(), os.clock()
for i = 1, U do ups[i]:enqueue { worker_status = "idle", external_metadata = { seq = 0, w = i } } end

if MODE == "tick" then
  -- Delivered PUTs are counted from stats() at each tick (a few tables per ms).
  local last = {}
  for i = 1, U do last[i] = 0 end
  ticker = wsup.every(TICK_MS, function()
    if t1 then return end
    for i = 1, U do
      local s = ups[i]:stats()
      delivered = delivered + s.delivered - last[i]
      failures = failures + s.failures - (last[-i] or 0)
      last[i], last[-i] = s.delivered, s.failures
      ups[i]:enqueue(next_patch(i))
    end
    if delivered >= TOTAL then finish() end
  end)
end

wsup.run()
local wall, cpu = (t1 - t0) / 1e6, c1 - c0
print(("puts_per_s=%.0f cpu_us_per_put=%.1f delivered=%d failures=%d wall_s=%.2f cpu_s=%.2f mode=%s")
  :format(counted / wall, cpu * 1e6 / counted, counted, failures, wall, cpu, MODE))
os.exit(0)
