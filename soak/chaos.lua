-- Fault soak against the embedded receiver: U uploaders (the built-in HTTP sender) each
-- send N patches to /worker/<u> on a wsup.receiver that fails 30% of PUTs with 500 or
-- 503 (some with Retry-After: 1), delays them, and drops connections (before and after
-- applying). Pass: every path's final state equals the fold of its patches, every
-- uploader flushes, and VmRSS stays flat after warm-up.
--
-- Run: build/wsup soak/chaos.lua [U [N [SECONDS [SEED [MIXED]]]]]
--   U uploaders (200), N patches each (5000): a warm-up of N/10 patches 10 ms apart, then
--   the rest over about SECONDS (60); MIXED=1 also puts non-object values under merge
--   keys (see soak/README.md).
-- Prints "chaos.NAME=VALUE" lines; exit 0 when every check passes, 1 otherwise.
local wsup = require "wsup"
local lib = dofile((arg[0]:match("^(.*)/") or ".") .. "/lib.lua")

local U = tonumber(arg[1]) or 200
local N = tonumber(arg[2]) or 5000
local SECONDS = tonumber(arg[3]) or 60
local SEED = tonumber(arg[4]) or 42
local MIXED = arg[5] == "1"
local RSS_EVERY_MS = 250

wsup.log_level("error") -- failures are the point here; the figures tell the story
math.randomseed(SEED)
local r = assert(wsup.receiver())
r:chaos { fail = 0.3, statuses = { 500, 503 }, retry_after = 0.2, retry_after_value = "1", delay_ms = { 0, 20 },
  drop = 0.05, drop_after_apply = 0.02, seed = SEED }

-- Warm-up: the first tenth of the patches one by one, 10 ms apart, which keeps every
-- uploader in flight at once, so that the allocator reaches its high-water mark before
-- the samples that count. Then bursts of 1..8 patches (they coalesce) and a pause: on
-- average the rest take SECONDS.
local WARM, BURST = N // 10, 8
local pause_ms = math.max(1, math.floor(SECONDS * 1000 / ((N - WARM) / ((BURST + 1) / 2))))

local ups, want, done = {}, {}, 0
for u = 1, U do
  ups[u] = wsup.uploader { url = ("%s/worker/%d"):format(r.url, u), name = "soak" .. u, base_delay_ms = 5,
    max_delay_ms = 100, jitter_ms = 10, max_retry_after_ms = 50, timeout_ms = 5000 }
  want[u] = {}
end

local t0 = wsup.now()
local rss = lib.rss_sampler(RSS_EVERY_MS)
for u = 1, U do
  wsup.spawn(function()
    local up, w, seq = ups[u], want[u], 0
    wsup.sleep(math.random(0, 10)) -- spread the starts
    while seq < N do
      for _ = 1, seq < WARM and 1 or math.random(BURST) do
        if seq == N then break end
        seq = seq + 1
        local p = lib.patch(math.random, seq, MIXED)
        up:enqueue(p)
        lib.fold(w, p)
      end
      wsup.sleep(seq <= WARM and 10 or math.random(pause_ms // 2, pause_ms * 3 // 2))
    end
    done = done + 1
  end)
end

local verdict = lib.verdict()
local check = verdict.check

while done < U do wsup.sleep(100) end
local t_enq = wsup.now()
rss.stop()
lib.save_samples(os.getenv("SOAK_RSS"), rss, RSS_EVERY_MS) -- for a closer look, when asked
local flushed = lib.flush_all(ups, 60000)
local t_end = wsup.now()
check(flushed == U, ("flushed %d of %d uploaders"):format(flushed, U))

local mismatched, first_bad = 0, nil
for u = 1, U do
  local got = r:state(("/worker/%d"):format(u))
  local same, where = lib.same(want[u], got or {})
  if not same or not got then
    mismatched = mismatched + 1
    first_bad = first_bad or ("/worker/%d at %s"):format(u, where or "$")
  end
end
check(mismatched == 0, ("%d of %d paths differ from the fold of their patches (first: %s)")
  :format(mismatched, U, first_bad))

-- The first quarter (the warm-up burst and more) does not count.
local v = lib.rss_verdict(rss.samples, 0.25, 0.05, 1024)
check(v.flat, ("VmRSS grew: first-third median %s KiB, last-third %s KiB (limit %s)%s")
  :format(v.first, v.last, v.limit and ("%.0f"):format(v.limit), v.why and ", " .. v.why or ""))

local st, sum = r:stats(), lib.sum_stats(ups)
for _, up in ipairs(ups) do up:close() end
r:chaos(nil)
r:close()

local statuses = {}
for k, n in pairs(st) do
  if math.type(k) == "integer" then statuses[#statuses + 1] = k .. ":" .. n end
end
table.sort(statuses)
lib.report("chaos.", {
  uploaders = U, patches = U * N, enqueue_s = (t_enq - t0) / 1000, flush_s = (t_end - t_enq) / 1000,
  rcv_requests = st.requests, rcv_statuses = table.concat(statuses, ","), rcv_dropped = st.dropped or 0,
  rcv_dropped_applied = st.dropped_applied or 0, up_enqueued = sum.enqueued, up_coalesced = sum.coalesced,
  up_absorbed = sum.absorbed, up_attempts = sum.attempts, up_delivered = sum.delivered,
  up_failures = sum.failures, up_dropped = sum.dropped, up_bytes = sum.bytes_sent, flushed = flushed,
  paths_mismatched = mismatched, rss_samples = v.n, rss_first_kib = v.first or "n/a",
  rss_last_kib = v.last or "n/a", rss_peak_kib = v.peak, rss_growth_pct = v.growth_pct or "n/a",
  rss_flat = v.flat and "yes" or "no", rss_timeline_kib = lib.timeline(rss.samples, 8),
  lua_heap_timeline_kib = lib.timeline(rss.lua, 8), pass = verdict.ok and "yes" or "no",
})
for _, f in ipairs(verdict.fails) do io.stderr:write("chaos: FAIL: ", f, "\n") end
return verdict.ok and 0 or 1
