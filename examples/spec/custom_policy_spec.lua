-- examples/custom_policy.lua under virtual time, against a fake server: the policy
-- takes its http function as a parameter, so here it gets a Lua function that records
-- each request and answers from a script. No network, no real waiting.
-- Run: build/wsup test examples/spec   (also part of the main suite)
local wsup = require "wsup"

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local policy_mod = dofile(HERE .. "/../custom_policy.lua")
local WSUP = os.getenv("WSUP_BIN") or (HERE .. "/../../build/wsup")

local SECRET = "k3y-for-tests"
local HOUR = 3600 * 1000

-- A fake server: answers[i] is the reply to request i ({ status =, headers = } or
-- { error = "message", code = "refused" }); 200 once they run out. Each request takes
-- latency ms of (virtual) time.
local function fake(answers, latency)
  local srv = { requests = {} }
  function srv.http(req)
    local n = #srv.requests + 1
    srv.requests[n] = { at = wsup.now(), method = req.method, url = req.url, body = req.body,
                        headers = req.headers or {} }
    wsup.sleep(latency or 10)
    local a = answers[n] or { status = 200 }
    if a.error then return nil, a.error, a.code or "refused" end
    return { status = a.status, headers = a.headers or {}, body = a.body or "" }
  end
  return srv
end

-- A token source that hands out tok-1, tok-2, ... and records whether each was a refresh.
local function tokens()
  local t = { calls = {} }
  function t.fn(refresh)
    t.calls[#t.calls + 1] = refresh and "refresh" or "first"
    return "tok-" .. #t.calls
  end
  return t
end

describe("custom_policy (virtual time, fake server)", function()
  local ups, level

  before_each(function()
    wsup.clock("virtual")
    wsup.randomseed(7)
    level = wsup.log_level()
    wsup.log_level("error") -- the policy's and the uploader's warnings are expected here
    ups = {}
  end)

  after_each(function()
    for _, up in ipairs(ups) do up:close() end
    wsup.run(HOUR)
    wsup.log_level(level)
  end)

  -- An uploader with the policy; opts go to policy_mod.new, uopts to wsup.uploader.
  local function setup(answers, opts, uopts)
    local srv = fake(answers)
    opts = opts or {}
    opts.url = opts.url or "http://fake.invalid/worker"
    opts.secret = opts.secret or SECRET
    opts.http = srv.http
    local p = policy_mod.new(opts)
    uopts = uopts or {}
    uopts.send = p.send
    uopts.base_delay_ms = uopts.base_delay_ms or 100
    uopts.jitter_ms = uopts.jitter_ms or 0
    local up = wsup.uploader(uopts)
    ups[#ups + 1] = up
    return up, srv, p
  end

  it("HMAC-SHA256 matches RFC 4231 test case 2", function()
    assert.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
      wsup.hmac_sha256("Jefe", "what do ya want for nothing?"))
    assert.equal("sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
      policy_mod.sign("Jefe", "what do ya want for nothing?"))
  end)

  it("PUTs the uploader's exact JSON and signs exactly those bytes in X-Signature", function()
    local up, srv = setup({})
    up:enqueue { worker_status = "busy", external_metadata = { id = math.maxinteger, pi = 3.25, s = "é\n" } }
    assert.is_true(up:flush(HOUR))
    assert.equal(1, #srv.requests)
    local req = srv.requests[1]
    assert.equal("PUT", req.method)
    assert.equal("http://fake.invalid/worker", req.url)
    assert.truthy(req.body:find('"id":9223372036854775807', 1, true), req.body)
    assert.equal("sha256=" .. wsup.hmac_sha256(SECRET, req.body), req.headers["X-Signature"])
    assert.equal("application/json", req.headers["Content-Type"])
    assert.is_nil(req.headers.Authorization) -- no token source: no Authorization header
  end)

  it("a different secret gives a different signature (the secret is really used)", function()
    local up1, srv1 = setup({}, { secret = "one" })
    local up2, srv2 = setup({}, { secret = "two" })
    up1:enqueue { a = 1 }
    up2:enqueue { a = 1 }
    assert.is_true(up1:flush(HOUR) and up2:flush(HOUR))
    assert.equal(srv1.requests[1].body, srv2.requests[1].body)
    assert.are_not.equal(srv1.requests[1].headers["X-Signature"], srv2.requests[1].headers["X-Signature"])
  end)

  it("sends Authorization: Bearer with the token, fetched once and reused", function()
    local t = tokens()
    local up, srv = setup({}, { token = t.fn })
    up:enqueue { a = 1 }
    assert.is_true(up:flush(HOUR))
    up:enqueue { a = 2 }
    assert.is_true(up:flush(HOUR))
    assert.equal(2, #srv.requests)
    assert.equal("Bearer tok-1", srv.requests[1].headers.Authorization)
    assert.equal("Bearer tok-1", srv.requests[2].headers.Authorization)
    assert.same({ "first" }, t.calls)
  end)

  it("after a 401 it refreshes the token and retries at once, within the same attempt", function()
    local t = tokens()
    local up, srv, p = setup({ { status = 401 } }, { token = t.fn }, { base_delay_ms = 5000 })
    up:enqueue { worker_status = "busy" }
    assert.is_true(up:flush(HOUR))
    assert.same({ "first", "refresh" }, t.calls)
    assert.equal(2, #srv.requests)
    assert.equal("Bearer tok-1", srv.requests[1].headers.Authorization)
    assert.equal("Bearer tok-2", srv.requests[2].headers.Authorization)
    assert.equal(srv.requests[1].body, srv.requests[2].body)
    assert.equal(srv.requests[1].headers["X-Signature"], srv.requests[2].headers["X-Signature"])
    assert.equal(10, srv.requests[2].at - srv.requests[1].at) -- one request's latency: no backoff
    local s = up:stats()
    assert.equal(1, s.attempts)
    assert.equal(0, s.failures)
    assert.equal(1, p.stats.refreshes)
  end)

  it("a 401 that persists with the fresh token fails the attempt; the next attempt fetches again", function()
    local t = tokens()
    local up, srv = setup({ { status = 401 }, { status = 401 } }, { token = t.fn }, { base_delay_ms = 300 })
    up:enqueue { a = 1 }
    assert.is_true(up:flush(HOUR))
    assert.same({ "first", "refresh", "first" }, t.calls)
    assert.equal(3, #srv.requests)
    assert.equal("Bearer tok-3", srv.requests[3].headers.Authorization)
    assert.is_true(srv.requests[3].at - srv.requests[2].at >= 300)
    assert.equal(2, up:stats().attempts)
  end)

  it("a token source that fails makes the attempt fail without a request; it is retried", function()
    local n = 0
    local up, srv = setup({}, { token = function()
      n = n + 1
      if n == 1 then error("token service down") end
      if n == 2 then return nil, "no token yet" end
      return "late-token"
    end }, { base_delay_ms = 100 })
    up:enqueue { a = 1 }
    assert.is_true(up:flush(HOUR))
    assert.equal(1, #srv.requests)
    assert.equal("Bearer late-token", srv.requests[1].headers.Authorization)
    assert.equal(3, up:stats().attempts)
  end)

  it("honours Retry-After in seconds on 503: the next request waits at least that long", function()
    local up, srv = setup({ { status = 503, headers = { ["retry-after"] = "7" } } })
    up:enqueue { a = 1 }
    assert.is_true(up:flush(HOUR))
    assert.equal(2, #srv.requests)
    local gap = srv.requests[2].at - srv.requests[1].at
    assert.is_true(gap >= 7000 and gap < 7200, "gap " .. gap)
  end)

  it("honours Retry-After on 429, whatever the header's case", function()
    local up, srv = setup({ { status = 429, headers = { ["Retry-After"] = "3" } } })
    up:enqueue { a = 1 }
    assert.is_true(up:flush(HOUR))
    local gap = srv.requests[2].at - srv.requests[1].at
    assert.is_true(gap >= 3000 and gap < 3200, "gap " .. gap)
  end)

  it("caps a huge Retry-After at max_retry_after_ms", function()
    local up, srv = setup({ { status = 503, headers = { ["retry-after"] = "86400" } } },
      { max_retry_after_ms = 2000 })
    up:enqueue { a = 1 }
    assert.is_true(up:flush(HOUR))
    local gap = srv.requests[2].at - srv.requests[1].at
    assert.is_true(gap >= 2000 and gap < 2200, "gap " .. gap)
  end)

  it("a 503 without Retry-After, a 500 and a transport error back off and retry", function()
    local up, srv = setup({ { status = 503 }, { status = 500 }, { error = "connection refused" } },
      nil, { base_delay_ms = 100, max_delay_ms = 1000 })
    up:enqueue { a = 1 }
    assert.is_true(up:flush(HOUR))
    assert.equal(4, #srv.requests)
    local gaps = {}
    for i = 2, 4 do gaps[i - 1] = srv.requests[i].at - srv.requests[i - 1].at - 10 end
    assert.same({ 100, 200, 400 }, gaps)
    assert.equal(3, up:stats().failures)
  end)

  it("other 4xx (400, 422) drop the payload: counted as dropped, never retried", function()
    for _, status in ipairs { 400, 422 } do
      local up, srv = setup({ { status = status } })
      up:enqueue { a = 1 }
      up:flush(HOUR)
      wsup.run(HOUR)
      assert.equal(1, #srv.requests, status)
      assert.equal(1, up:stats().dropped, status)
    end
  end)

  it("parses Retry-After as delay-seconds or an HTTP-date, relative to now", function()
    local now = 784111777 -- Sun, 06 Nov 1994 08:49:37 GMT
    assert.equal(120000, policy_mod.retry_after_ms("120", now))
    assert.equal(0, policy_mod.retry_after_ms("0", now))
    assert.equal(30000, policy_mod.retry_after_ms("Sun, 06 Nov 1994 08:50:07 GMT", now))
    assert.equal(86400000, policy_mod.retry_after_ms("Mon, 07 Nov 1994 08:49:37 GMT", now))
    assert.equal(0, policy_mod.retry_after_ms("Sat, 05 Nov 1994 08:49:37 GMT", now)) -- in the past
    assert.equal(0, policy_mod.retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", now))
    assert.is_nil(policy_mod.retry_after_ms(nil, now))
    assert.is_nil(policy_mod.retry_after_ms("soon", now))
    assert.is_nil(policy_mod.retry_after_ms("-5", now))
    assert.is_nil(policy_mod.retry_after_ms("Sun, 06 Foo 1994 08:49:37 GMT", now))
    -- Seconds beyond what ms in an integer hold: a long wait (capped by the uploader), never an error or a wrap.
    for _, v in ipairs { "9223372036854775807", "99999999999999999999" } do
      local ms = policy_mod.retry_after_ms(v, now)
      assert.is_true(math.type(ms) == "integer" and ms >= 2 ^ 53, v)
    end
  end)

  it("uses wsup.http.request unless given an http function", function()
    local p = policy_mod.new { url = "http://127.0.0.1:1/w", secret = SECRET }
    assert.equal(wsup.http.request, p.http)
  end)

  it("refuses to start without a secret or a url, naming what is missing", function()
    if os.getenv("WSUP_SECRET") then
      pending("WSUP_SECRET is set in this environment")
      return
    end
    local ok, err = pcall(policy_mod.new, { url = "http://127.0.0.1:1/w" })
    assert.is_false(ok)
    assert.matches("WSUP_SECRET", err)
    ok, err = pcall(policy_mod.new, { secret = SECRET })
    assert.is_false(ok)
    assert.matches("url", err)
  end)

  it("says why there is no token when WSUP_TOKEN_FILE cannot be read (a directory)", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(("local M = dofile(%q); local t, err = M.env_token(); io.write(tostring(t), ' ', tostring(err))")
      :format(HERE .. "/../custom_policy.lua"))
    f:close()
    local pr = assert(io.popen(("WSUP_TOKEN_FILE=/tmp timeout 10 %s %s 2>&1"):format(WSUP, script)))
    local out = pr:read("a")
    pr:close()
    os.remove(script)
    assert.matches("^nil /tmp", out)
  end)

  it("by default reads the token from WSUP_TOKEN_FILE and re-reads it after a 401 (a rotated token)", function()
    local tokfile, script = os.tmpname(), os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(([[
local wsup = require "wsup"
wsup.clock("virtual")
local M = dofile(%q)
local function write(s) local o = assert(io.open(os.getenv("WSUP_TOKEN_FILE"), "w")) o:write(s, "\n") o:close() end
write("old-token")
local seen = {}
local p = M.new { url = "http://fake.invalid/w", http = function(req)
  seen[#seen + 1] = req.headers.Authorization
  if req.headers.Authorization == "Bearer old-token" then
    write("new-token") -- rotated by someone else meanwhile
    return { status = 401, headers = {}, body = "" }
  end
  return { status = 204, headers = {}, body = "" }
end }
local up = wsup.uploader { send = p.send }
up:enqueue { a = 1 }
io.write(tostring(up:flush(60000)), " ", table.concat(seen, ","))
]]):format(HERE .. "/../custom_policy.lua"))
    f:close()
    local cmd = ("WSUP_SECRET=s WSUP_TOKEN_FILE=%s timeout 10 %s %s 2>&1"):format(tokfile, WSUP, script)
    local pr = assert(io.popen(cmd))
    local out = pr:read("a")
    pr:close()
    os.remove(tokfile)
    os.remove(script)
    assert.equal("true Bearer old-token,Bearer new-token", out)
  end)
end)
