-- The main job: a worker's heartbeat. Every second it enqueues its status and
-- metadata (a counter and a microsecond timestamp: exact integers on the wire).
-- With WSUP_URL unset it starts the embedded receiver and shows the server-side
-- state converging; with WSUP_URL set it sends there.
-- Run: build/wsup examples/heartbeat.lua [seconds]     (make run: 5 seconds)
local wsup = require "wsup"

local seconds = tonumber(arg and arg[1]) or 10
local url, rcv = os.getenv("WSUP_URL"), nil
if not url or url == "" then
  rcv = assert(wsup.receiver { host = "127.0.0.1", port = 0 })
  url = rcv.url .. "/worker"
end

-- Display only: integers printed exactly, keys sorted.
local function show(v)
  if type(v) ~= "table" then
    if v == wsup.null then return "null" end
    if math.type(v) == "integer" then return ("%d"):format(v) end
    return type(v) == "string" and ("%q"):format(v) or tostring(v)
  end
  local keys, out = {}, {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do out[#out + 1] = k .. "=" .. show(v[k]) end
  return "{" .. table.concat(out, " ") .. "}"
end

local up <close> = wsup.uploader { url = url, name = "heartbeat", base_delay_ms = 200, max_delay_ms = 2000 }
print(("heartbeat: PUT %s every second for %g s%s"):format(url, seconds, rcv and " (embedded receiver)" or ""))

local beats = 0
local stop = false
wsup.after(seconds * 1000, function() stop = true end)
while not stop do
  beats = beats + 1
  up:enqueue {
    worker_status = beats % 5 == 0 and "idle" or "busy",
    external_metadata = { beats = beats, at_us = wsup.time_us(), host = os.getenv("HOSTNAME") or "localhost" },
    internal_metadata = { pid_hint = beats * 1000003 },
  }
  up:flush(900)
  local s = up:stats()
  local state = rcv and show(rcv:state("/worker")) or ("last HTTP status " .. tostring(s.last_status))
  print(("%3d  sent %-3d requests  server: %s"):format(beats, s.attempts, state))
  wsup.sleep(1000)
end
local s = up:stats()
print(("done: %d beats, %d requests, %d delivered, %d failures"):format(beats, s.attempts, s.delivered, s.failures))
if rcv then rcv:close() end
