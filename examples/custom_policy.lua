-- A send policy in Lua, built on wsup.http.request, for a server that wants:
--   * the exact body signed:  X-Signature: sha256=<hex HMAC-SHA256(secret, body)>
--     (the secret comes from WSUP_SECRET);
--   * a bearer token that expires: after a 401 the policy fetches a fresh token and
--     tries once more at once;
--   * Retry-After honoured on 429/503 (seconds or an HTTP-date), capped.
--
-- Run the demo (embedded receiver, which answers 401 once and 503 + Retry-After once):
--   WSUP_SECRET=s3cret build/wsup examples/custom_policy.lua
-- or against a server:
--   WSUP_SECRET=... WSUP_TOKEN_FILE=/run/token build/wsup examples/custom_policy.lua http://host/worker
--
-- As a library (`dofile`, or `require` with examples/ on package.path) it returns M:
--   local policy = M.new { url = ..., secret = ..., token = fn, http = fn }
--   local up = wsup.uploader { send = policy.send, ... }
-- `http` defaults to wsup.http.request; specs pass a fake one (examples/spec/).
local wsup = require "wsup"

local M = {}

M.SIGNATURE_HEADER = "X-Signature"

-- The signature header's value for body: "sha256=" and the hex HMAC.
function M.sign(secret, body)
  return "sha256=" .. wsup.hmac_sha256(secret, body)
end

-- Days since 1970-01-01 of a civil date (proleptic Gregorian); no time zones involved.
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9, Oct = 10,
                 Nov = 11, Dec = 12 }

-- A Retry-After value in ms: delay-seconds ("120") or an IMF-fixdate ("Sun, 06 Nov 1994
-- 08:49:37 GMT") relative to now_s (Unix seconds; default os.time()). nil if absent or
-- unreadable; a date in the past gives 0.
function M.retry_after_ms(value, now_s)
  if type(value) ~= "string" then return nil end
  local secs = value:match("^%s*(%d+)%s*$")
  if secs then -- saturate: "99999999999999999999" is a long wait (the uploader caps it), not an error
    local n = math.tointeger(secs)
    return n and n <= math.maxinteger // 1000 and n * 1000 or math.maxinteger // 1000 * 1000
  end
  local d, mon, y, h, mi, s = value:match("^%s*%a%a%a, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT%s*$")
  if not d or not MONTHS[mon] then return nil end
  local at = days_from_civil(tonumber(y), MONTHS[mon], tonumber(d)) * 86400 + tonumber(h) * 3600 +
             tonumber(mi) * 60 + tonumber(s)
  return math.max(0, at - (now_s or os.time())) * 1000
end

-- The default token source: the file WSUP_TOKEN_FILE, re-read on every fetch (so a
-- rotated token is picked up after a 401), else the WSUP_TOKEN variable, else none.
function M.env_token()
  local file = os.getenv("WSUP_TOKEN_FILE")
  if file and file ~= "" then
    local f, err = io.open(file, "rb")
    if not f then return nil, err end
    local t = f:read("a")
    f:close()
    if not t then return nil, file .. ": cannot be read" end -- a directory opens, but reads nothing
    t = t:gsub("%s+$", "")
    if t == "" then return nil, file .. " is empty" end
    return t
  end
  local t = os.getenv("WSUP_TOKEN")
  if t and t ~= "" then return t end
  return nil, "no token"
end

local function header(headers, name)
  for k, v in pairs(headers or {}) do
    if k:lower() == name then return v end
  end
  return nil
end

-- opts:
--   url                 where to PUT (required)
--   secret              HMAC key (default: WSUP_SECRET; required)
--   token               function(refresh) -> token or nil, err; called once before the
--                       first request and with refresh = true after a 401. Default:
--                       M.env_token when WSUP_TOKEN_FILE or WSUP_TOKEN is set, else no
--                       Authorization header at all. false: never send one.
--   http                function(req) -> res | nil, err, code (default wsup.http.request)
--   timeout_ms          per request (default 10000)
--   max_retry_after_ms  cap on a server's Retry-After (default 60000)
--   header              signature header name (default "X-Signature")
-- Returns a policy: policy.send is the uploader's send function; policy.stats counts
-- requests, token fetches and 401 refreshes; policy.http is the http function in use.
function M.new(opts)
  opts = opts or {}
  assert(type(opts.url) == "string", "custom_policy: 'url' is required")
  local secret = opts.secret or os.getenv("WSUP_SECRET")
  assert(type(secret) == "string" and secret ~= "", "custom_policy: no secret (set WSUP_SECRET or pass 'secret')")
  local token_fn = opts.token
  if token_fn == nil and ((os.getenv("WSUP_TOKEN_FILE") or "") ~= "" or (os.getenv("WSUP_TOKEN") or "") ~= "") then
    token_fn = M.env_token
  end
  local policy = {
    http = opts.http or wsup.http.request,
    stats = { requests = 0, token_fetches = 0, refreshes = 0 },
  }
  local sig_header = opts.header or M.SIGNATURE_HEADER
  local cap = opts.max_retry_after_ms or 60000
  local token -- cached between sends

  local function fetch(refresh)
    policy.stats.token_fetches = policy.stats.token_fetches + 1
    local ok, t, err = pcall(token_fn, refresh)
    if not ok or type(t) ~= "string" or t == "" then
      wsup.log("warn", "custom_policy: cannot get a token: %s", tostring(ok and (err or "none") or t))
      return nil
    end
    return t
  end

  local function put(json)
    local headers = { ["Content-Type"] = "application/json", [sig_header] = M.sign(secret, json) }
    if token then headers.Authorization = "Bearer " .. token end
    policy.stats.requests = policy.stats.requests + 1
    return policy.http { method = "PUT", url = opts.url, body = json, headers = headers,
                         timeout_ms = opts.timeout_ms or 10000 }
  end

  function policy.send(_, json)
    if token_fn and not token then
      token = fetch(false)
      if not token then return false end
    end
    local res = put(json)
    if res and res.status == 401 and token_fn then
      policy.stats.refreshes = policy.stats.refreshes + 1
      local fresh = fetch(true)
      if not fresh then
        token = nil
        return false
      end
      token = fresh
      res = put(json)
    end
    if not res then return false end -- a transport error: the uploader backs off
    local s = res.status
    if s >= 200 and s < 300 then return true end
    if s == 429 or s == 503 then
      local ms = M.retry_after_ms(header(res.headers, "retry-after"))
      if ms then return false, math.min(ms, cap) end
      return false
    end
    if s == 401 then
      token = nil -- still refused after a fresh token: fetch again on the next attempt
      return false
    end
    if s >= 400 and s < 500 and s ~= 408 and s ~= 425 then return "drop" end
    return false
  end

  return policy
end

-- The demo, when run as a script (not when loaded with dofile or require).
local function demo(url)
  local rcv
  if not url then
    rcv = assert(wsup.receiver { port = 0 })
    url = rcv.url .. "/worker"
    rcv:fail(1, 401) -- the first token is "expired"
  end
  local n, token = 0, nil -- with a real server: WSUP_TOKEN_FILE or WSUP_TOKEN, if set (see M.new)
  if rcv then
    token = function(refresh) -- the demo's token service
      n = n + 1
      print(("token #%d%s"):format(n, refresh and " (refresh after a 401)" or ""))
      return "demo-token-" .. n
    end
  end
  local policy = M.new { url = url, token = token }
  local up <close> = wsup.uploader { name = "custom_policy", send = policy.send, base_delay_ms = 200,
                                     max_delay_ms = 2000 }
  up:enqueue { worker_status = "busy", external_metadata = { job = 1, started_us = wsup.time_us() } }
  assert(up:flush(10000), "not delivered")
  if rcv then rcv:fail(1, 503, 1) end -- next: "busy, come back in 1 s"
  local t0 = wsup.now()
  up:enqueue { worker_status = "idle", external_metadata = { job = wsup.null, done = 1 } }
  assert(up:flush(10000), "not delivered")
  local s = up:stats()
  print(("delivered %d patches in %d attempts, %d HTTP requests; %d token fetches; last wait %d ms"):format(
    s.delivered, s.attempts, policy.stats.requests, policy.stats.token_fetches, wsup.now() - t0))
  if rcv then
    local st = rcv:state("/worker")
    print(("server state: worker_status=%s done=%s job=%s"):format(st.worker_status,
      tostring(st.external_metadata.done), tostring(st.external_metadata.job)))
    rcv:close()
  end
end

if arg and arg[0] and arg[0]:match("custom_policy%.lua$") and select("#", ...) <= 1
   and (... == nil or tostring(...):match("^https?://")) then
  if not os.getenv("WSUP_SECRET") then
    io.stderr:write("custom_policy: set WSUP_SECRET (the HMAC key), e.g. WSUP_SECRET=s3cret\n")
    return 2
  end
  demo(...)
end

return M
