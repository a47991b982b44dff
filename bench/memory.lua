-- U uploaders, each with one stalled send in flight and one pending 8-key patch: the
-- same state as ../shared/peer/bench_memory.mjs. Run it under /usr/bin/time -f %M for
-- the process's max RSS.
--
-- Equivalence with the seed: there, the first enqueue ({worker_status="idle",
-- external_metadata={w=i}}) starts the send at once (drain() runs synchronously up to
-- send(), whose promise never settles), so that payload stays in flight; the second
-- enqueue (worker_status="busy", external_metadata={key0..key7="value-k-i"}) finds the
-- send in flight and becomes the pending patch. wsup starts a send only on the loop's
-- next turn, so: every uploader gets its first patch, then one loop turn
-- (wsup.sleep(0)) starts every send, each a task that yields forever (a send that
-- never returns) holding its payload as a table and as JSON text; then every uploader
-- gets the 8-key patch, which stays pending. Same end state as the seed, reached in a
-- different order; "check" verifies it on every uploader.
--
-- Run: /usr/bin/time -f %M build/wsup bench/memory.lua U [STAGE|check|http|floor]
--   -> "uploaders=<u> stage=<s> vmrss_kib=<x> lua_kib=<y>"
-- STAGE (default 4) stops early, to see what each part costs:
--   1 uploaders created; 2 + the first patch pending; 3 + that patch in flight (the
--   stalled send); 4 + the 8-key patch pending (the full state).
-- "http" builds the full state plus one url uploader whose attempt loads libcurl (which
-- a process only maps once it makes a request), for the base RSS of an HTTP user.
-- "floor" builds no uploader: only what a stalled Lua send must hold by contract (below).
-- "check" builds the full state, then checks it on every uploader (after reading
-- VmRSS: the check allocates, so keep it apart from max-RSS runs); exit 1 if any differs.
local U = tonumber(arg[1]) or 10000

if arg[2] == "floor" then
  -- What the contract alone costs, with no uploader at all: a send policy runs as a task
  -- (a coroutine) and gets its payload as a fresh table and as JSON text, so a stalled Lua
  -- send holds at least a suspended coroutine, a 2-key table and a string. Lua heap bytes
  -- per stalled send (collectgarbage("count"), after a full collection).
  local held = {}
  collectgarbage("collect")
  local k0 = collectgarbage("count")
  for i = 1, U do
    local co = coroutine.create(function(patch, json) coroutine.yield(patch, json) end)
    coroutine.resume(co, { worker_status = "idle", external_metadata = { w = i } },
      ('{"worker_status":"idle","external_metadata":{"w":%d}}'):format(i))
    held[i] = co
  end
  collectgarbage("collect")
  local bytes = (collectgarbage("count") - k0) * 1024 / U
  local suspended = 0
  for i = 1, U do
    if coroutine.status(held[i]) == "suspended" then suspended = suspended + 1 end
  end
  print(("uploaders=%d stage=floor lua_bytes_per_send=%.0f suspended=%d"):format(U, bytes, suspended))
  os.exit(suspended == U and 0 or 1)
end

local wsup = require "wsup"
local CHECK = arg[2] == "check"
local HTTP = arg[2] == "http" -- also one url uploader, so libcurl is loaded (src/dl.h)
local STAGE = (CHECK or HTTP) and 4 or tonumber(arg[2]) or 4

local function stalled() coroutine.yield() end -- a send that never settles

local ups = {}
for i = 1, U do
  local up = wsup.uploader { send = stalled }
  if STAGE >= 2 then up:enqueue { worker_status = "idle", external_metadata = { w = i } } end
  ups[i] = up
end
if STAGE >= 3 then wsup.sleep(0) end -- one loop turn: every uploader starts its (stalled) send
if STAGE >= 4 then
  for i = 1, U do
    local md = {}
    for k = 0, 7 do md["key" .. k] = "value-" .. k .. "-" .. i end
    ups[i]:enqueue { worker_status = "busy", external_metadata = md }
  end
end
if HTTP then -- nothing listens on port 9 of 127.0.0.1: the attempt is refused, libcurl stays loaded
  local probe = wsup.uploader { url = "http://127.0.0.1:9/worker", base_delay_ms = 60000 }
  probe:enqueue { worker_status = "idle" }
  wsup.sleep(100)
  assert(probe:stats().attempts == 1, "the url uploader made no attempt")
  probe:close()
end
collectgarbage("collect")

local function vmrss()
  local f = io.open("/proc/self/status")
  if not f then return -1 end
  local kib = f:read("a"):match("VmRSS:%s*(%d+)")
  f:close()
  return tonumber(kib) or -1
end
local line = ("uploaders=%d stage=%d vmrss_kib=%d lua_kib=%.0f"):format(U, STAGE, vmrss(), collectgarbage("count"))

if not CHECK then
  print(line)
  os.exit(0)
end

-- Every uploader: a send in flight, and exactly the 8-key patch pending.
local inflight, pending = 0, 0
for i = 1, U do
  if ups[i]:stats().inflight then inflight = inflight + 1 end
  local p = ups[i]:pending()
  local md, n = p and p.external_metadata, 0
  for _ in pairs(md or {}) do n = n + 1 end
  if p and p.worker_status == "busy" and n == 8 and md.key7 == "value-7-" .. i then pending = pending + 1 end
end
print(("%s inflight=%d pending=%d"):format(line, inflight, pending))
os.exit(inflight == U and pending == U and 0 or 1)
