-- Restart soak against nginx (soak/nginx.conf, a WebDAV PUT sink): U uploaders each send
-- N patches to /worker/<u> while nginx is stopped and started again RESTARTS times, one
-- every EVERY_MS (alternately SIGTERM, a fast shutdown that cuts requests off, and
-- SIGQUIT, a graceful one), each time down for DOWN_MS. Pass: after the final restart
-- every uploader flushes (nothing pending), the body nginx stored last for every path
-- is the one carrying the last patch (seq = N), and VmRSS stays flat.
--
-- Run: build/wsup soak/nginx.lua PREFIX [U [N [RESTARTS [EVERY_MS [DOWN_MS]]]]]
--   PREFIX: an empty directory for nginx's files (soak/run.sh makes and removes it).
-- Prints "nginx.NAME=VALUE" lines; exit 0 when every check passes, 1 otherwise.
local wsup = require "wsup"
local lib = dofile((arg[0]:match("^(.*)/") or ".") .. "/lib.lua")

local PREFIX = assert(arg[1], "usage: nginx.lua PREFIX [U [N [RESTARTS [EVERY_MS [DOWN_MS]]]]]")
local U = tonumber(arg[2]) or 200
local N = tonumber(arg[3]) or 1000
local RESTARTS = tonumber(arg[4]) or 5
local EVERY_MS = tonumber(arg[5]) or 2000
local DOWN_MS = tonumber(arg[6]) or 300
local SECONDS = (RESTARTS * EVERY_MS + 1000) / 1000 -- enqueueing spans every restart
local RSS_EVERY_MS = 100

wsup.log_level("error")
math.randomseed(7)

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- A port that was free a moment ago (the receiver binds port 0, then lets it go).
local function free_port()
  local r = assert(wsup.receiver())
  local port = r.port
  r:close()
  return port
end

local port = free_port()
local base = ("http://127.0.0.1:%d"):format(port)
do
  local conf = assert(slurp("soak/nginx.conf")):gsub("PREFIX", PREFIX):gsub("PORT", tostring(port))
  local f = assert(io.open(PREFIX .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
  assert(sh(("mkdir -p %s/data && chmod 755 %s && chmod 777 %s/data"):format(PREFIX, PREFIX, PREFIX)))
end

local function nginx_pid() return tonumber(slurp(PREFIX .. "/nginx.pid") or "") end

-- Waits (yielding) up to ms for pred(); returns its last value.
local function wait_until(ms, pred)
  local deadline = wsup.now() + ms
  local v = pred()
  while not v and wsup.now() < deadline do
    wsup.sleep(20)
    v = pred()
  end
  return v
end

local function start()
  assert(sh(("nginx -c %s/nginx.conf -p %s/ >>%s/out.log 2>&1 &"):format(PREFIX, PREFIX, PREFIX)))
  return wait_until(5000, function()
    return wsup.http.request { url = base .. "/ready", timeout_ms = 500 } ~= nil
  end)
end

-- Whether pid runs: a zombie does not (nginx's parent, the shell that started it, is
-- gone, and init may take its time to reap it).
local function alive(pid)
  local st = slurp(("/proc/%d/stat"):format(pid))
  return st ~= nil and st:match("^%d+ %b() (%a)") ~= "Z"
end

local function stop(sig)
  local pid = nginx_pid()
  if not pid then return false end
  sh(("kill -%s %d 2>/dev/null"):format(sig, pid))
  local gone = wait_until(5000, function() return not alive(pid) end)
  if not gone then -- a graceful stop that hangs: cut it short
    sh(("kill -TERM %d 2>/dev/null"):format(pid))
    gone = wait_until(5000, function() return not alive(pid) end)
  end
  os.remove(PREFIX .. "/nginx.pid")
  return gone
end

local verdict = lib.verdict()
local check = verdict.check

assert(start(), "nginx did not start: " .. (slurp(PREFIX .. "/out.log") or "?"))

local ups, done = {}, 0
for u = 1, U do
  ups[u] = wsup.uploader { url = ("%s/worker/%d"):format(base, u), name = "soak" .. u, base_delay_ms = 10,
    max_delay_ms = 200, jitter_ms = 20, timeout_ms = 3000, connect_timeout_ms = 1000 }
end

-- As in chaos.lua: a warm-up of N/10 patches 10 ms apart (every uploader in flight at
-- once), then bursts of 1..8 and pauses.
local WARM, BURST = N // 10, 8
local pause_ms = math.max(1, math.floor((SECONDS * 1000 - WARM * 10) / ((N - WARM) / ((BURST + 1) / 2))))
local t0 = wsup.now()
local rss = lib.rss_sampler(RSS_EVERY_MS)
for u = 1, U do
  wsup.spawn(function()
    local up, seq = ups[u], 0
    wsup.sleep(math.random(0, 10))
    while seq < N do
      for _ = 1, seq < WARM and 1 or math.random(BURST) do
        if seq == N then break end
        seq = seq + 1
        up:enqueue(lib.patch(math.random, seq, false))
      end
      wsup.sleep(seq <= WARM and 10 or math.random(pause_ms // 2, pause_ms * 3 // 2))
    end
    done = done + 1
  end)
end

local restarted, down_ms, restarts_done = 0, 0, false
wsup.spawn(function()
  for i = 1, RESTARTS do
    wsup.sleep(EVERY_MS - DOWN_MS)
    local t = wsup.now()
    local stopped = stop(i % 2 == 1 and "TERM" or "QUIT")
    local t1 = wsup.now()
    wsup.sleep(DOWN_MS)
    local t2 = wsup.now()
    local up = start()
    io.stderr:write(("restart %d: stop %d ms, down %d ms, start %d ms\n"):format(i, t1 - t, t2 - t1, wsup.now() - t2))
    down_ms = down_ms + (wsup.now() - t)
    check(stopped and up, ("restart %d: stopped %s, started %s"):format(i, stopped, up))
    if stopped and up then restarted = restarted + 1 end
  end
  restarts_done = true
end)

while done < U or not restarts_done do wsup.sleep(100) end
local t_enq = wsup.now()
rss.stop()
lib.save_samples(os.getenv("SOAK_RSS"), rss, RSS_EVERY_MS) -- for a closer look, when asked
local mid = lib.sum_stats(ups) -- before the final flush: what the restarts cost
local flushed = lib.flush_all(ups, 30000)
local t_end = wsup.now()
check(flushed == U, ("flushed %d of %d uploaders after the last restart"):format(flushed, U))

-- The body nginx stored last for each path carries the last patch.
local stale, first_stale = 0, nil
for u = 1, U do
  local body = slurp(("%s/data/worker/%d"):format(PREFIX, u)) or ""
  local seq = tonumber(body:match('"seq":(%d+)'))
  if seq ~= N then
    stale = stale + 1
    first_stale = first_stale or ("/worker/%d has seq %s"):format(u, seq)
  end
end
check(stale == 0, ("%d of %d paths do not end with seq %d (first: %s)"):format(stale, U, N, first_stale))

local v = lib.rss_verdict(rss.samples, 0.25, 0.05, 1024)
check(v.flat, ("VmRSS grew: first-third median %s KiB, last-third %s KiB (limit %s)%s")
  :format(v.first, v.last, v.limit and ("%.0f"):format(v.limit), v.why and ", " .. v.why or ""))

local sum = lib.sum_stats(ups)
for _, up in ipairs(ups) do up:close() end
stop("TERM")

lib.report("nginx.", {
  uploaders = U, patches = U * N, restarts = restarted, down_ms_total = down_ms, enqueue_s = (t_enq - t0) / 1000,
  flush_s = (t_end - t_enq) / 1000, flushed = flushed, paths_stale = stale, up_enqueued = sum.enqueued,
  up_attempts = sum.attempts, up_delivered = sum.delivered, up_failures = sum.failures,
  up_failures_before_flush = mid.failures, up_absorbed = sum.absorbed, up_dropped = sum.dropped,
  rss_samples = v.n, rss_first_kib = v.first or "n/a", rss_last_kib = v.last or "n/a", rss_peak_kib = v.peak,
  rss_growth_pct = v.growth_pct or "n/a", rss_flat = v.flat and "yes" or "no",
  rss_timeline_kib = lib.timeline(rss.samples, 8), lua_heap_timeline_kib = lib.timeline(rss.lua, 8),
  pass = verdict.ok and "yes" or "no",
})
for _, f in ipairs(verdict.fails) do io.stderr:write("nginx: FAIL: ", f, "\n") end
return verdict.ok and 0 or 1
