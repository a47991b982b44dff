-- A fleet: N simulated workers on one loop, each with its own coalescing uploader
-- PUTting to BASE/worker/<i>. Each worker picks up jobs, reports progress far faster
-- than one request per update, and ends idle. At the end: a summary of enqueues,
-- requests and retries, and (with the embedded receiver) a check that every worker's
-- server-side state equals what the worker last said.
--
-- Run: build/wsup examples/fleet.lua [WORKERS [SECONDS [BASE_URL]]]     (default 50 workers, 3 s)
--   BASE_URL defaults to $WSUP_URL, else an embedded receiver that answers after 40 ms
--   (so updates coalesce) and some PUTs with 503 (so retries show). Exit status 0 when every worker's last state
--   was delivered (and matches, when it can be checked), else 3.
local wsup = require "wsup"

local N = math.tointeger(tonumber(arg[1])) or 50
local SECONDS = tonumber(arg[2]) or 3
local base = arg[3] or os.getenv("WSUP_URL")
local rcv
if not base or base == "" then
  rcv = assert(wsup.receiver { port = 0 })
  base = rcv.url
  rcv:delay(40)          -- a server slower than the workers' updates: they coalesce
  rcv:fail(N // 2, 503) -- a bumpy start
end
base = base:gsub("/+$", "")
math.randomseed(tonumber(os.getenv("WSUP_SEED")) or 42)

-- What the server does with a patch, so a worker knows what state it should end with.
local MERGE = { external_metadata = true, internal_metadata = true }
local function apply(view, patch)
  for k, v in pairs(patch) do
    if MERGE[k] and type(v) == "table" then
      local cur = type(view[k]) == "table" and view[k] or {}
      for mk, mv in pairs(v) do
        if mv == wsup.null then cur[mk] = nil else cur[mk] = mv end
      end
      view[k] = cur
    else
      view[k] = v
    end
  end
end

local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local stopping = false
local running = N
local workers = {}

local function worker(w)
  local jobs = 0
  local function say(patch)
    w.up:enqueue(patch)
    apply(w.view, patch)
  end
  say { worker_status = "idle", external_metadata = { jobs = 0 }, internal_metadata = { pid = 1000 + w.id } }
  while not stopping do
    local r = math.random()
    if r < 0.2 then
      jobs = jobs + 1
      say { worker_status = "busy", external_metadata = { jobs = jobs, job = w.id * 1000000 + jobs, progress = 0 } }
    elseif r < 0.9 then
      say { external_metadata = { progress = math.random(0, 100), at_us = wsup.time_us() } }
    else
      say { worker_status = "idle", external_metadata = { job = wsup.null, progress = wsup.null } }
    end
    wsup.sleep(math.random(5, 50))
  end
  say { worker_status = "idle", external_metadata = { job = wsup.null, progress = wsup.null, jobs = jobs } }
  w.delivered = w.up:flush(10000)
  running = running - 1
end

print(("fleet: %d workers for %g s, PUT to %s/worker/<i>%s"):format(N, SECONDS, base:gsub("//[^/@]*@", "//***@"),
  rcv and " (embedded receiver)" or ""))
local t0 = wsup.now()
for i = 1, N do
  local w = { id = i, view = {} }
  w.up = wsup.uploader { url = ("%s/worker/%d"):format(base, i), name = "worker-" .. i,
                         base_delay_ms = 100, max_delay_ms = 1000, jitter_ms = 100 }
  workers[i] = w
  wsup.spawn(worker, w)
end
wsup.after(SECONDS * 1000, function()
  stopping = true
  if rcv then rcv:fail(N // 4, 503) end -- and a bumpy end
end)
while running > 0 do wsup.sleep(20) end

local enq, req, ok, failed, undelivered, converged = 0, 0, 0, 0, 0, 0
for _, w in ipairs(workers) do
  local s = w.up:stats()
  enq, req, ok, failed = enq + s.enqueued, req + s.attempts, ok + s.delivered, failed + s.failures
  if not w.delivered then undelivered = undelivered + 1 end
  if rcv and same(rcv:state("/worker/" .. w.id), w.view) then converged = converged + 1 end
  w.up:close()
end
print(("fleet: %d enqueues -> %d requests (%.1f per request), %d delivered, %d failed attempts retried, " ..
  "%d workers undelivered, %.1f s"):format(enq, req, enq / math.max(req, 1), ok, failed, undelivered,
  (wsup.now() - t0) / 1000))
if rcv then
  print(("fleet: converged %d/%d"):format(converged, N))
  rcv:close()
end
return (undelivered == 0 and (not rcv or converged == N)) and 0 or 3
