-- `wsup pipe`: PUT each JSON line of stdin through one coalescing uploader.
-- Lines are parsed by the C core (up:enqueue_json), so integers reach the server
-- exactly; lua-cjson never sees them.
local wsup = require "wsup"

local M = {}

M.USAGE = [[
usage: wsup pipe --url URL [--header 'K: V']... [--base-delay-ms N] [--max-delay-ms N]
                 [--jitter-ms N] [--timeout-ms N] [--drain-ms N] [--max-line BYTES]
                 [--ca-file PEM]
Reads JSON patches from stdin, one per line, and PUTs them coalesced to URL.
Exit status: 0 all delivered, 3 some state not delivered, 2 usage error.]]

local NUMERIC = { ["base-delay-ms"] = true, ["max-delay-ms"] = true, ["jitter-ms"] = true,
                  ["drain-ms"] = true, ["max-line"] = true, ["timeout-ms"] = true }

-- Returns the options, or nil and a message.
function M.parse(args)
  local o = { headers = {}, ["max-line"] = 1048576 }
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, value = a:match("^%-%-([%w-]+)=(.*)$")
    if not name then
      name = a:match("^%-%-([%w-]+)$")
      if not name then return nil, "unexpected argument '" .. a .. "'" end
      if name == "help" then return nil, "help" end
      i = i + 1
      value = args[i]
      if value == nil then return nil, "--" .. name .. " needs a value" end
    end
    if name == "url" then
      if not value:match("^https?://") then return nil, "--url must start with http:// or https://" end
      o.url = value
    elseif name == "header" then
      local k, v = value:match("^([^:]+):%s*(.*)$")
      if not k then return nil, "--header takes 'Name: value'" end
      o.headers[k] = v
    elseif name == "ca-file" then
      o["ca-file"] = value
    elseif NUMERIC[name] then
      local n = math.tointeger(tonumber(value))
      if not n or n < 0 then return nil, "--" .. name .. " takes a whole number" end
      if n == 0 and name == "max-line" then return nil, "--max-line must be at least 1" end
      o[name] = n
    else
      return nil, "unknown option --" .. name
    end
    i = i + 1
  end
  if not o.url then return nil, "--url is required" end
  return o
end

local function summary(s)
  return ("lines %d, bad %d, requests %d, delivered %d, dropped %d"):format(
    s.lines, s.bad, s.up.attempts, s.up.delivered, s.up.dropped)
end

function M.main(...)
  local o, err = M.parse { ... }
  if not o then
    if err == "help" then
      print(M.USAGE)
      return 0
    end
    io.stderr:write("wsup pipe: ", err, "\n", M.USAGE, "\n")
    return 2
  end
  o["drain-ms"] = wsup.drain_ms(o["drain-ms"]) -- the host's --drain-ms, unless given here
  -- The uploader checks the headers (names are tokens, no CR, LF or controls in values): its
  -- refusal is a usage error here.
  local made, up = pcall(wsup.uploader, {
    url = o.url, headers = o.headers, base_delay_ms = o["base-delay-ms"], max_delay_ms = o["max-delay-ms"],
    jitter_ms = o["jitter-ms"], timeout_ms = o["timeout-ms"], ca_file = o["ca-file"],
  })
  if not made then
    local why = tostring(up):gsub("^wsup%.uploader: option 'headers'", "--header")
    io.stderr:write("wsup pipe: ", why, "\n", M.USAGE, "\n")
    return 2
  end
  local tty = wsup.isatty(2)
  local st = { lines = 0, bad = 0, up = up:stats() }
  local eof = false
  local reader
  -- The first SIGINT/SIGTERM is ours: stop reading, then drain and summarize below.
  local function finish() eof = true; if reader then reader:stop() end end
  local sigint, sigterm = wsup.signal("int", finish), wsup.signal("term", finish)
  local unreadable
  reader, unreadable = wsup.lines(io.stdin, function(line, why)
    if line == nil then
      eof = true
      return
    end
    st.lines = st.lines + 1
    local ok, e = false, why
    if line then ok, e = up:enqueue_json(line) end
    if not ok then
      st.bad = st.bad + 1
      if tty then io.stderr:write("\r\27[K") end -- off the progress line
      io.stderr:write(("line %d: %s\n"):format(st.lines, (e or "bad line"):gsub("^line %d+: ", "")))
    end
  end, { max_line = o["max-line"] })
  if not reader then -- stdin is there but cannot be read (a directory, say): nothing will come
    sigint:stop()
    sigterm:stop()
    up:close()
    io.stderr:write("wsup pipe: ", unreadable, "\n")
    return 1
  end

  local function progress(final)
    st.up = up:stats()
    if tty then io.stderr:write("\r\27[K", summary(st), final and "\n" or "") end
  end
  while not eof do -- the reader runs as its own tasks; this one only reports
    wsup.sleep(tty and 100 or 20)
    if tty then progress() end
  end
  -- The handlers stay during the drain: a first signal then changes nothing (the host's
  -- would end the script before the summary); a second one always exits at once.
  local delivered = up:flush(o["drain-ms"])
  sigint:stop()
  sigterm:stop()
  progress(true)
  st.up = up:stats()
  if not tty then io.stderr:write(summary(st), "\n") end
  local all = delivered and st.up.dropped == 0
  up:close() -- the host reports what was not delivered, and why
  return all and 0 or 3
end

return M
