-- Publishes a JSON status file each time it changes. Whatever writes the file (a
-- worker, a cron job, an editor) needs to know nothing about HTTP: each saved version
-- that is a JSON object is PUT, coalesced, retried until delivered.
--
-- Run: build/wsup examples/status_file.lua [FILE [URL]]
--   FILE defaults to $WSUP_STATUS_FILE, else ./status.json; URL to $WSUP_URL, else an
--   embedded receiver whose state is printed after each delivery. Then change the file:
--     echo '{"worker_status":"busy","external_metadata":{"job":42}}' > status.json
--   Ctrl-C (or SIGTERM) stops watching and drains: exit 0 when the last version was
--   delivered, 3 when it was not.
--
-- wsup.watch follows a file replaced by rename (the safe way to write it: a temp file,
-- then mv) as well as in-place writes, and a file that does not exist yet. A half-written
-- or invalid version is logged and skipped; the next change is read.
local wsup = require "wsup"

local path = arg[1] or os.getenv("WSUP_STATUS_FILE") or "status.json"
local url = arg[2] or os.getenv("WSUP_URL")
local rcv
if not url or url == "" then
  rcv = assert(wsup.receiver { port = 0 })
  url = rcv.url .. "/worker"
end

local up = wsup.uploader { url = url, name = "status_file", base_delay_ms = 200, max_delay_ms = 5000 }
local last -- the text last enqueued

local function publish()
  local f = io.open(path, "rb")
  if not f then return end -- not there (yet, or between unlink and rename): wait for the next change
  local text = f:read("a")
  f:close()
  if text == last then return end -- saved again without a change
  local ok, err = up:enqueue_json(text)
  if not ok then
    wsup.log("warn", "%s: %s; waiting for the next change", path, err or "not accepted")
    return
  end
  last = text
  wsup.log("info", "%s changed (%d bytes): enqueued", path, #text)
  if rcv and up:flush(5000) then
    local st = rcv:state("/worker") or {}
    print(("server now has worker_status=%s"):format(tostring(st.worker_status)))
    io.stdout:flush()
  end
end

local watcher, err = wsup.watch(path, publish, { debounce_ms = 100 })
if not watcher then error(err, 0) end
print(("status_file: watching %s, PUT to %s%s"):format(path, (url:gsub("//[^/@]*@", "//***@")),
  rcv and " (embedded receiver)" or ""))
io.stdout:flush()
publish() -- the current version, if there is one
