-- The built-in HTTP sender and wsup.http.request, against the embedded receiver
-- and against Debian's nginx, all on 127.0.0.1 and on the real clock.
local wsup = require "wsup"
local harness = require "support.harness"
local cli = require "support.cli"

local function free_port()
  local r = assert(wsup.receiver { port = 0 })
  local port = r.port
  r:close()
  return port
end

describe("HTTP sender against the embedded receiver", function()
  local H = harness.new { clock = "real", drain_ms = 2000 }
  local rcv
  before_each(function()
    H.before()
    rcv = assert(wsup.receiver { port = 0 })
  end)
  after_each(function()
    H.after()
    rcv:close()
  end)
  local function uploader(opts) return H.track(wsup.uploader(opts)) end

  it("reports a headers function's unusable table through on_error and retries; the host keeps running", function()
    local errs, calls = {}, 0
    local up = uploader { url = rcv.url .. "/worker/hdrbad", base_delay_ms = 10, jitter_ms = 0,
      on_error = function(e) errs[#errs + 1] = e end,
      headers = function()
        calls = calls + 1
        if calls == 1 then return { X = true } end
        if calls == 2 then
          local t = {}
          for i = 1, 70 do t["X-" .. i] = "v" end
          return t
        end
        if calls == 3 then return { ["Bad Name"] = "v" } end
        if calls == 4 then return { X = "a\r\nInjected: 1" } end
        return { ["X-Ok"] = "1" }
      end }
    up:enqueue { a = 1 }
    assert.is_true(up:flush(3000))
    assert.equals(5, calls)
    assert.equals(4, #errs)
    assert.matches("headers must map names to strings", errs[1])
    assert.matches("more than %d+ headers", errs[2])
    assert.matches('invalid header name "Bad Name"', errs[3], 1, true)
    assert.matches('header "X": CR, LF or a control character in its value', errs[4], 1, true)
    assert.same({ a = 1 }, rcv:state("/worker/hdrbad"))
  end)

  it("raises for HTTP options given to an uploader with a send policy, naming them", function()
    for _, opt in ipairs { "headers", "timeout_ms", "connect_timeout_ms", "insecure", "ca_file", "classify",
                           "max_retry_after_ms" } do
      local opts = { send = function() return true end }
      opts[opt] = ({ headers = {}, insecure = true, ca_file = "x.pem", classify = print })[opt] or 1000
      assert.has_error(function() wsup.uploader(opts) end,
        ("wsup.uploader: option '%s' is for the HTTP sender: give 'url', not 'send'"):format(opt))
    end
  end)

  it("wsup.http.request raises for a url that is not http:// or https://", function()
    assert.has_error(function() wsup.http.request { url = "ftp://127.0.0.1/x" } end,
      "wsup.http.request: 'url' must start with http:// or https://")
  end)

  it("refuses header names and values that are not HTTP when the uploader is made, naming them", function()
    assert.has_error(function() wsup.uploader { url = rcv.url .. "/w", headers = { ["Bad Name"] = "v" } } end,
      'wsup.uploader: option \'headers\': invalid header name "Bad Name"')
    assert.has_error(function() wsup.uploader { url = rcv.url .. "/w", headers = { X = "a\rb" } } end,
      'wsup.uploader: option \'headers\': header "X": CR, LF or a control character in its value')
    assert.has_error(function() wsup.http.request { url = rcv.url .. "/w", headers = { ["a:b"] = "v" } } end,
      'wsup.http.request: invalid header name "a:b"')
  end)

  it("reads the 413 a server sends before taking an oversized body, every time", function()
    local big = ("x"):rep(2 * 1024 * 1024)
    for i = 1, 4 do
      local res, err, code = wsup.http.request { method = "PUT", url = rcv.url .. "/worker/big", body = big }
      assert.is_table(res, ("attempt %d: %s (%s)"):format(i, tostring(err), tostring(code)))
      assert.equals(413, res.status)
    end
  end)

  it("PUTs the coalesced patch as JSON, and the server ends with the exact state", function()
    local up = uploader { url = rcv.url .. "/worker/a" }
    up:enqueue { worker_status = "idle", external_metadata = { n = 123456789012345678, gone = 1 } }
    up:enqueue { worker_status = "busy", external_metadata = { gone = wsup.null, big = math.maxinteger } }
    assert.is_true(up:flush(5000))
    local st = rcv:state("/worker/a")
    assert.equals("busy", st.worker_status)
    assert.equals(123456789012345678, st.external_metadata.n)
    assert.equals(math.maxinteger, st.external_metadata.big)
    assert.is_nil(st.external_metadata.gone)
    local s = up:stats()
    assert.equals(1, s.attempts)
    assert.equals(200, s.last_status)
    assert.is_true(s.bytes_sent > 0)
  end)

  it("retries on 503 and then delivers", function()
    rcv:fail(2, 503)
    local up = uploader { url = rcv.url .. "/worker/r", base_delay_ms = 10, jitter_ms = 0 }
    up:enqueue { worker_status = "busy" }
    assert.is_true(up:flush(5000))
    local s = up:stats()
    assert.equals(3, s.attempts)
    assert.equals(2, s.failures)
    assert.equals(1, s.delivered)
    assert.equals("busy", rcv:state("/worker/r").worker_status)
  end)

  it("honours Retry-After: 1 with a gap of at least one second", function()
    rcv:fail(1, 503, 1)
    local up = uploader { url = rcv.url .. "/worker/ra", base_delay_ms = 10, jitter_ms = 0 }
    local t0 = wsup.now()
    up:enqueue { worker_status = "busy" }
    assert.is_true(up:flush(5000))
    assert.is_true(wsup.now() - t0 >= 1000, "waited only " .. (wsup.now() - t0) .. " ms")
    assert.equals(2, up:stats().attempts)
  end)

  it("caps Retry-After at max_retry_after_ms", function()
    rcv:fail(1, 429, 3600)
    local up = uploader { url = rcv.url .. "/worker/cap", base_delay_ms = 10, jitter_ms = 0,
                          max_retry_after_ms = 200 }
    local t0 = wsup.now()
    up:enqueue { worker_status = "busy" }
    assert.is_true(up:flush(5000))
    assert.is_true(wsup.now() - t0 < 2000)
  end)

  it("classifies an answer by its status even when its body is over 1 MiB (classify sees the first MiB)", function()
    -- The receiver answers each PUT with the whole state: 1.2 MB after the second.
    local seen = {}
    local up = uploader { url = rcv.url .. "/worker/big", base_delay_ms = 50, jitter_ms = 0,
      classify = function(res)
        seen[#seen + 1] = { status = res.status, len = res.body and #res.body, truncated = res.truncated }
        return res.status == 200 and "ok" or "retry"
      end }
    up:enqueue { k1 = ("a"):rep(600000) }
    assert.is_true(up:flush(5000))
    up:enqueue { k2 = ("b"):rep(600000) }
    assert.is_true(up:flush(5000))
    local s = up:stats()
    assert.equals(2, s.attempts)
    assert.equals(2, s.delivered)
    assert.equals(200, s.last_status)
    assert.same({ status = 200, len = 1048576, truncated = true }, seen[2])
    assert.is_nil(seen[1].truncated)
    local plain = uploader { url = rcv.url .. "/worker/big" } -- the default classification too
    plain:enqueue { k3 = 1 }
    assert.is_true(plain:flush(5000))
    assert.equals(1, plain:stats().attempts)
  end)

  it("drops a payload answered 400, counts it and says why", function()
    rcv:fail(1, 400)
    local up = uploader { url = rcv.url .. "/worker/d", base_delay_ms = 10 }
    up:enqueue { worker_status = "busy" }
    assert.is_true(up:flush(5000))
    local s = up:stats()
    assert.equals(1, s.attempts)
    assert.equals(1, s.dropped)
    assert.equals(0, s.delivered)
    assert.matches("400", s.last_error)
    assert.is_nil(rcv:state("/worker/d"))
  end)

  it("times out against a server that stalls, and retries", function()
    rcv:delay(1500)
    local up = uploader { url = rcv.url .. "/worker/t", timeout_ms = 200, base_delay_ms = 10, jitter_ms = 0 }
    up:enqueue { worker_status = "busy" }
    assert.is_false(up:flush(600))
    local s = up:stats()
    assert.is_true(s.failures >= 1)
    assert.matches("timeout", s.last_error)
    rcv:delay(0)
    assert.is_true(up:flush(5000))
  end)

  it("retries a refused connection until the server appears", function()
    local port = free_port()
    local up = uploader { url = ("http://127.0.0.1:%d/worker/late"):format(port), base_delay_ms = 50,
                          max_delay_ms = 100, jitter_ms = 0 }
    up:enqueue { worker_status = "busy", external_metadata = { seq = 1 } }
    assert.is_false(up:flush(300))
    assert.matches("refused", up:stats().last_error)
    up:enqueue { external_metadata = { seq = 2 } }
    local late = assert(wsup.receiver { port = port })
    assert.is_true(up:flush(5000))
    assert.same({ worker_status = "busy", external_metadata = { seq = 2 } }, late:state("/worker/late"))
    late:close()
  end)

  it("keeps a reused connection moving after another uploader's refused retries", function()
    -- regression: work queued from inside libuv's timer phase (libcurl's timer) waited
    -- for the poll that followed, so a transfer on a reused connection stalled until an
    -- unrelated deadline (first blamed on the 0 ms timer; the loop wake-up was the cause).
    local ok = uploader { url = rcv.url .. "/worker/k" }
    ok:enqueue { a = 1 }
    assert.is_true(ok:flush(2000))
    local refused = uploader { url = ("http://127.0.0.1:%d/worker"):format(free_port()), base_delay_ms = 50,
                               jitter_ms = 0 }
    refused:enqueue { a = 1 }
    assert.is_false(refused:flush(300))
    refused:close()
    for i = 1, 5 do
      ok:enqueue { a = i }
      assert.is_true(ok:flush(1000), "round " .. i)
    end
  end)

  it("calls a headers function on every attempt", function()
    rcv:fail(1, 503)
    local calls = 0
    local up = uploader { url = rcv.url .. "/worker/h", base_delay_ms = 10, jitter_ms = 0,
                          headers = function() calls = calls + 1; return { Authorization = "Bearer " .. calls } end }
    up:enqueue { worker_status = "busy" }
    assert.is_true(up:flush(5000))
    assert.equals(2, calls)
  end)

  it("lets classify override the outcome and give a retry-after", function()
    local seen = {}
    local up = uploader { url = rcv.url .. "/worker/c", base_delay_ms = 10, jitter_ms = 0,
      classify = function(res)
        seen[#seen + 1] = res.status
        if #seen == 1 then return "retry", 50 end
        return "ok"
      end }
    up:enqueue { worker_status = "busy" }
    assert.is_true(up:flush(5000))
    assert.same({ 200, 200 }, seen)
    assert.equals(2, up:stats().attempts)
  end)

  it("brings 1000 uploaders on distinct paths to their exact state", function()
    local fleet = {}
    for i = 1, 1000 do
      fleet[i] = uploader { url = ("%s/worker/%d"):format(rcv.url, i), base_delay_ms = 20 }
      for seq = 1, 3 do
        fleet[i]:enqueue { worker_status = "busy", external_metadata = { seq = seq, w = i, big = i * 1000000000000 } }
      end
    end
    for i = 1, 1000 do assert.is_true(fleet[i]:flush(20000), "uploader " .. i) end
    for i = 1, 1000 do
      assert.same({ worker_status = "busy", external_metadata = { seq = 3, w = i, big = i * 1000000000000 } },
                  rcv:state("/worker/" .. i))
    end
  end)

  it("keeps every uploader going when the process runs out of descriptors (300 uploaders, ulimit -n 128)", function()
    -- Idle keep-alive connections of uploaders that are done must not hold every descriptor
    -- while others cannot connect: the caches with no transfer running let theirs go.
    local script = cli.script([[
local wsup = require "wsup"
local base, U = arg[1], tonumber(arg[2])
local ups = {}
for i = 1, U do
  ups[i] = wsup.uploader { url = ("%s/worker/fd%d"):format(base, i), base_delay_ms = 100, max_delay_ms = 500 }
  ups[i]:enqueue { v = 1 }
end
wsup.sleep(1000)
for i = 1, U do ups[i]:enqueue { v = 2 } end
local last
for i = 1, U do
  if not ups[i]:flush(20000) then last = ups[i]:stats().last_error end
end
print(last or "all delivered")
]])
    local r = cli.run("sh -c 'ulimit -n 128 && exec " .. cli.WSUP .. " --drain-ms 100 " .. script .. " " .. rcv.url
      .. " 300'", { stdin = false, timeout = 60 })
    assert.equals("all delivered\n", r.out, r.err)
    assert.equals(0, r.rc, r.err)
    for i = 1, 300 do assert.same({ v = 2 }, rcv:state("/worker/fd" .. i)) end
    -- running out is said as such, a local failure, not the server refusing
    assert.truthy(r.err:find("cannot open a socket: Too many open files (transport)", 1, true), r.err)
    assert.is_nil(r.err:find("(refused)", 1, true), r.err)
  end)

  it("rejects a url holding whitespace or a control character when the uploader is made, naming it", function()
    for _, u in ipairs { "http://127.0.0.1:1/a b", "http://127.0.0.1:1/a\tb", "http://127.0.0.1:1/a\127" } do
      assert.has_error(function() wsup.uploader { url = u } end,
        "wsup.uploader: option 'url' contains whitespace or a control character")
    end
  end)

  it("takes a positive duration under 1 ms as 1 ms, not as 0 (which means no limit)", function()
    rcv:delay(1500)
    local up = uploader { url = rcv.url .. "/worker/t", timeout_ms = 0.5, base_delay_ms = 60000 }
    up:enqueue { a = 1 }
    wsup.run(1000) -- with no limit, the answer would come at 1500 ms and the attempt be in flight still
    assert.equals(1, up:stats().attempts)
    assert.equals(1, up:stats().failures)
    assert.matches("timeout", up:stats().last_error)
    rcv:delay(0)
  end)

  it("rejects url and send together, and neither", function()
    assert.has_error(function() wsup.uploader { url = rcv.url, send = function() end } end)
    assert.has_error(function() wsup.uploader {} end)
    assert.has_error(function() wsup.uploader { url = "ftp://x" } end, nil)
  end)
end)

describe("wsup.http.request", function()
  local rcv
  before_each(function()
    wsup.clock("real")
    rcv = assert(wsup.receiver { port = 0 })
  end)
  after_each(function() rcv:close() end)

  it("returns status, lower-cased headers and body", function()
    local res = assert(wsup.http.request { method = "PUT", url = rcv.url .. "/worker/x",
      headers = { ["Content-Type"] = "application/json" }, body = '{"a":1}' })
    assert.equals(200, res.status)
    assert.matches("application/json", res.headers["content-type"])
    assert.matches('"a":1', res.body)
  end)

  it("yields inside a task without blocking other tasks", function()
    rcv:delay(200)
    local order = {}
    wsup.spawn(function()
      local res = wsup.http.request { url = rcv.url .. "/worker/y" }
      order[#order + 1] = "http " .. res.status
    end)
    wsup.spawn(function() wsup.sleep(10); order[#order + 1] = "sleep" end)
    wsup.run(5000)
    assert.same({ "sleep", "http 200" }, order)
  end)

  it("returns nil, message, code on a transport failure", function()
    local res, msg, code = wsup.http.request { url = ("http://127.0.0.1:%d/"):format(free_port()) }
    assert.is_nil(res)
    assert.is_string(msg)
    assert.equals("refused", code)
  end)

  it("fails a response body over the limit instead of growing", function()
    local big = string.rep("x", 5000)
    local res, msg = wsup.http.request { method = "PUT", url = rcv.url .. "/worker/big", max_body = 100,
      body = ('{"s":"%s"}'):format(big) }
    assert.is_nil(res)
    assert.matches("limit", msg)
  end)

  it("raises for a NUL byte in url, method or ca_file instead of cutting the string there", function()
    assert.has_error(function() wsup.http.request { url = rcv.url .. "/ok\0/../evil" } end,
      "wsup.http.request: 'url' contains a NUL byte")
    assert.has_error(function() wsup.http.request { url = rcv.url .. "/ok", method = "DELETE\0junk" } end,
      "wsup.http.request: 'method' contains a NUL byte")
    assert.has_error(function() wsup.http.request { url = rcv.url .. "/ok", ca_file = "/etc/x\0y" } end,
      "wsup.http.request: 'ca_file' contains a NUL byte")
    assert.has_error(function() wsup.uploader { url = rcv.url .. "/ok\0/../evil" } end,
      "wsup.uploader: option 'url' contains a NUL byte")
    assert.has_error(function() wsup.uploader { url = rcv.url .. "/ok", ca_file = "/etc/x\0y" } end,
      "wsup.uploader: option 'ca_file' contains a NUL byte")
    assert.equals(0, rcv:stats().requests)
  end)

  it("raises for an insecure that is not a boolean, as the uploader does", function()
    assert.has_error(function() wsup.http.request { url = rcv.url .. "/worker/m", insecure = "yes" } end,
      "wsup.http.request: 'insecure' must be a boolean")
    assert.has_error(function() wsup.uploader { url = rcv.url .. "/worker/m", insecure = "yes" } end,
      "wsup.uploader: option 'insecure' must be a boolean")
  end)

  it("raises for max_body 0 (a limit must be at least one byte), and a limit of 1 holds", function()
    assert.has_error(function() wsup.http.request { url = rcv.url .. "/worker/m", max_body = 0 } end,
      "wsup.http.request: 'max_body' must be a positive integer")
    local res, msg, code = wsup.http.request { method = "PUT", url = rcv.url .. "/worker/m", max_body = 1,
                                                body = '{"a":1}' }
    assert.is_nil(res)
    assert.matches("limit", msg)
    assert.equals("too_large", code)
  end)

  it("rejects CR or LF in a header", function()
    assert.has_error(function()
      wsup.http.request { url = rcv.url, headers = { ["X-Evil"] = "a\r\nInjected: 1" } }
    end, 'wsup.http.request: header "X-Evil": CR, LF or a control character in its value')
    assert.has_error(function()
      wsup.http.request { url = rcv.url, headers = { ["X-Evil"] = "a\nb" } }
    end, 'wsup.http.request: header "X-Evil": CR, LF or a control character in its value')
  end)

  it("refuses to run on the virtual clock", function()
    wsup.clock("virtual")
    assert.has_error(function() wsup.http.request { url = rcv.url } end, nil)
    local ok, err = pcall(wsup.http.request, { url = rcv.url })
    assert.is_false(ok)
    assert.matches("virtual", err)
    wsup.clock("real")
  end)
end)

describe("HTTP sender against nginx", function()
  local nginx, why
  setup(function()
    wsup.clock("real")
    nginx, why = require("support.nginx").start(18091)
  end)
  teardown(function() if nginx then nginx.stop() end end)

  it("delivers the exact bytes, big integers included", function()
    assert(nginx, why)
    local up = wsup.uploader { url = nginx.url .. "/worker/exact" }
    up:enqueue { worker_status = "busy", external_metadata = { n = 123456789012345678, f = 0.1 } }
    assert.is_true(up:flush(5000))
    local res = assert(wsup.http.request { url = nginx.url .. "/worker/exact" })
    assert.matches('"n":123456789012345678', res.body, 1, true)
    assert.matches('"worker_status":"busy"', res.body, 1, true)
    local f = res.body:match('"f":([^,}]+)')
    assert.equals(0.1, tonumber(f))
    up:close()
  end)

  it("drops on 400", function()
    assert(nginx, why)
    local up = wsup.uploader { url = nginx.url .. "/status/400" }
    up:enqueue { a = 1 }
    assert.is_true(up:flush(5000))
    assert.equals(1, up:stats().dropped)
    up:close()
  end)

  it("waits at least Retry-After between 503 answers", function()
    assert(nginx, why)
    local at = {}
    local up = wsup.uploader { url = nginx.url .. "/status/503", base_delay_ms = 10, jitter_ms = 0,
      classify = function(res)
        at[#at + 1] = wsup.now()
        assert.equals(503, res.status)
        return "retry"
      end }
    up:enqueue { a = 1 }
    assert.is_false(up:flush(1600))
    up:close()
    wsup.run(100)
    assert.equals(2, #at)
    assert.is_true(at[2] - at[1] >= 1000)
  end)

  it("times out against a location that stalls", function()
    assert(nginx, why)
    local up = wsup.uploader { url = nginx.url .. "/stall", timeout_ms = 200, base_delay_ms = 5000 }
    up:enqueue { a = 1 }
    assert.is_false(up:flush(700))
    assert.matches("timeout", up:stats().last_error)
    up:close()
  end)

  -- The PUT lines of one of nginx's logs (tls.log, or plain.log for the HTTP server)
  -- whose uri starts with prefix, in order: protocol, connection number, uri, status,
  -- Content-Type.
  -- nginx logs a request after answering it, so this waits (up to 2 s) for want lines.
  local function logged_puts(log, prefix, want)
    local function read()
      local rows = {}
      for line in (cli.slurp(nginx.prefix .. "/" .. log) or ""):gmatch("[^\n]+") do
        local proto, conn, method, uri, status, ctype = line:match('^(%S+) (%d+) (%S+) (%S+) (%d+) "(.*)"$')
        if method == "PUT" and uri:sub(1, #prefix) == prefix then
          rows[#rows + 1] = { proto = proto, conn = conn, uri = uri, status = status, ctype = ctype }
        end
      end
      return rows
    end
    return cli.poll(function()
      local rows = read()
      return #rows >= want and rows
    end, 2) or read()
  end

  it("delivers over HTTPS with HTTP/2 (insecure = true for a self-signed certificate)", function()
    assert(nginx, why)
    local up = wsup.uploader { url = nginx.tls_url .. "/worker/tls", insecure = true }
    up:enqueue { worker_status = "busy", external_metadata = { n = 123456789012345678 } }
    assert.is_true(up:flush(5000))
    local res = assert(wsup.http.request { url = nginx.tls_url .. "/worker/tls", insecure = true })
    assert.equals(200, res.status)
    -- key order follows the patch table's traversal, which Lua seeds per process
    assert.matches('"worker_status":"busy"', res.body, 1, true)
    assert.matches('"external_metadata":{"n":123456789012345678}', res.body, 1, true)
    assert.equals(#'{"worker_status":"busy","external_metadata":{"n":123456789012345678}}', #res.body)
    local puts = logged_puts("tls.log", "/worker/tls", 1)
    assert.equals(1, #puts)
    assert.equals("HTTP/2.0", puts[1].proto)
    up:close()
  end)

  it("refuses a certificate it cannot verify, says so, and keeps the state to retry", function()
    assert(nginx, why)
    local res, msg, code = wsup.http.request { url = nginx.tls_url .. "/worker/tls" }
    assert.is_nil(res)
    assert.equals("tls", code)
    assert.matches("certificate", msg)
    local up = wsup.uploader { url = nginx.tls_url .. "/worker/refused", base_delay_ms = 5000 }
    up:enqueue { worker_status = "idle" }
    assert.is_false(up:flush(1000))
    local st = up:stats()
    assert.equals(0, st.delivered)
    assert.equals(1, st.failures)
    assert.matches("certificate", st.last_error)
    up:close()
  end)

  it("verifies against a private CA given as ca_file, and a pooled handle forgets it", function()
    assert(nginx, why)
    local ca = nginx.prefix .. "/cert.pem" -- self-signed: its own CA
    local up = wsup.uploader { url = nginx.tls_url .. "/worker/ca", ca_file = ca }
    up:enqueue { worker_status = "verified" }
    assert.is_true(up:flush(5000))
    up:close()
    local res = assert(wsup.http.request { url = nginx.tls_url .. "/worker/ca", ca_file = ca })
    assert.equals('{"worker_status":"verified"}', res.body)
    -- the next requests reuse pooled handles: without ca_file the system CAs apply again
    local none, msg, code = wsup.http.request { url = nginx.tls_url .. "/worker/ca" }
    assert.is_nil(none, "a request without ca_file was verified with the previous request's CA")
    assert.equals("tls", code, msg)
    local bad, _, code2 = wsup.http.request {
      url = nginx.tls_url .. "/worker/ca", ca_file = nginx.prefix .. "/none.pem" }
    assert.is_nil(bad)
    assert.equals("tls", code2)
  end)

  it("wsup pipe --ca-file verifies an https server with a private CA", function()
    assert(nginx, why)
    local url = nginx.tls_url .. "/worker/pipe"
    local r = cli.run(("%s pipe --url %s --ca-file %s"):format(cli.WSUP, url, nginx.prefix .. "/cert.pem"),
      { stdin = '{"worker_status":"a"}\n{"worker_status":"b","n":123456789012345678}\n', timeout = 20 })
    cli.cleanup()
    assert.equals(0, r.rc, r.err)
    local res = assert(wsup.http.request { url = url, insecure = true })
    assert.matches('"n":123456789012345678', res.body, 1, true)
    assert.matches('"worker_status":"b"', res.body, 1, true)
    local refused = cli.run(("%s pipe --url %s --drain-ms 500"):format(cli.WSUP, url),
      { stdin = '{"worker_status":"c"}\n', timeout = 20 })
    cli.cleanup()
    assert.equals(3, refused.rc) -- undelivered: the system CAs do not know this certificate
  end)

  it("ca_file replaces the system's CAs: the system CA directory is not even looked at", function()
    -- OpenSSL looks a server certificate's issuer up in the CA directory by subject hash;
    -- strace shows whether it did. Without ca_file it must (that is what makes this a test).
    assert(nginx, why)
    local hash = cli.run(("openssl x509 -noout -subject_hash -in %s/cert.pem"):format(nginx.prefix)).out:match("%x+")
    assert(hash, "openssl x509 -subject_hash failed")
    local other = nginx.prefix .. "/other.pem"
    assert(os.execute(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
      .. "-subj /CN=other -keyout %s/other.key -out %s >/dev/null 2>&1"):format(nginx.prefix, other)))
    local function lookups(ca)
      local trace = cli.tmp()
      local script = cli.script(([[
local wsup = require "wsup"
local res, msg, code = wsup.http.request { url = %q, ca_file = %s, timeout_ms = 3000 }
assert(res == nil and code == "tls", tostring(msg))
]]):format(nginx.tls_url .. "/worker/ca", ca and ("%q"):format(ca) or "nil"))
      -- LeakSanitizer cannot run under ptrace: in sanitizer runs, leaks are checked elsewhere
      local strace = "env ASAN_OPTIONS=\"$ASAN_OPTIONS:detect_leaks=0\" strace -f -e trace=openat,newfstatat,stat"
      local r = cli.run(("%s -o %s %s %s"):format(strace, trace, cli.WSUP, script), { timeout = 20 })
      assert.equals(0, r.rc, r.err)
      local _, n = (cli.slurp(trace) or ""):gsub("/etc/ssl/certs/" .. hash, "")
      return n
    end
    assert.is_true(lookups(nil) > 0, "without ca_file the system CA directory was not searched")
    assert.equals(0, lookups(other))
    cli.cleanup()
  end)

  it("rejects a ca_file that is not a string, naming it", function()
    assert.has_error(function() wsup.uploader { url = "https://127.0.0.1:1/x", ca_file = 1 } end,
      "wsup.uploader: option 'ca_file' must be a string")
    assert.has_error(function() wsup.http.request { url = "https://127.0.0.1:1/x", ca_file = true } end,
      "wsup.http.request: 'ca_file' must be a string")
  end)

  it("sends application/json, or the Content-Type the headers give instead (one, not both)", function()
    assert(nginx, why)
    local plain = wsup.uploader { url = nginx.url .. "/worker/ct1" }
    local own = wsup.uploader { url = nginx.url .. "/worker/ct2",
                                headers = { ["content-type"] = "application/merge-patch+json" } }
    local fn = wsup.uploader { url = nginx.url .. "/worker/ct3",
                               headers = function() return { ["Content-Type"] = "text/x-patch" } end }
    for _, up in ipairs { plain, own, fn } do up:enqueue { a = 1 } end
    for _, up in ipairs { plain, own, fn } do assert.is_true(up:flush(5000)); up:close() end
    local puts, by = logged_puts("plain.log", "/worker/ct", 3), {}
    for _, row in ipairs(puts) do by[row.uri] = row.ctype end
    assert.same({ ["/worker/ct1"] = "application/json", ["/worker/ct2"] = "application/merge-patch+json",
                  ["/worker/ct3"] = "text/x-patch" }, by)
  end)

  it("keeps 200 url uploaders on the connections they opened, across connection caches", function()
    -- 200 is more uploaders than one connection cache serves (64): each must find its own
    -- idle connection again in its cache, so the second round opens (almost) none.
    assert(nginx, why)
    local ups = {}
    for i = 1, 200 do ups[i] = wsup.uploader { url = ("%s/worker/reuse%d"):format(nginx.url, i) } end
    for round = 1, 2 do
      for i = 1, 200 do ups[i]:enqueue { round = round } end
      for i = 1, 200 do assert.is_true(ups[i]:flush(5000)) end
    end
    local puts = logged_puts("plain.log", "/worker/reuse", 400)
    assert.equals(400, #puts)
    local first = {}
    for i = 1, 200 do first[puts[i].conn] = true end
    -- A few may open one: round 1 also took idle connections left by earlier tests, some
    -- of which do not last (5–7 seen). Looking in the wrong cache would open most.
    local new = 0
    for i = 201, 400 do
      if not first[puts[i].conn] then new = new + 1 end
    end
    assert.is_true(new <= 20, ("the second round opened %d connections"):format(new))
    for i = 1, 200 do ups[i]:close() end
  end)

  it("multiplexes many uploaders over a few HTTP/2 connections", function()
    assert(nginx, why)
    local ups = {}
    for i = 1, 50 do
      ups[i] = wsup.uploader { url = ("%s/worker/mux%d"):format(nginx.tls_url, i), insecure = true }
      ups[i]:enqueue { worker_status = "busy", n = i }
    end
    for i = 1, 50 do assert.is_true(ups[i]:flush(5000)) end
    local conns, puts = {}, logged_puts("tls.log", "/worker/mux", 50)
    for _, row in ipairs(puts) do
      conns[row.conn] = true
      assert.equals("201", row.status) -- a new file each
      assert.equals("HTTP/2.0", row.proto)
    end
    local n = 0
    for _ in pairs(conns) do n = n + 1 end
    assert.equals(50, #puts)
    assert.is_true(n <= 2, ("50 PUTs came on %d connections"):format(n))
    for i = 1, 50 do ups[i]:close() end
  end)

  -- The header block nginx received, from its /headers location.
  local function header_block_of(res) return "\r\n" .. assert(res, "no response").body end

  it("sends a header whose value is empty as an empty header, in place of a default of that name", function()
    assert(nginx, why)
    local got = header_block_of(wsup.http.request { url = nginx.url .. "/headers",
      headers = { ["X-Empty"] = "", ["X-Space"] = " ", ["X-Tab"] = "\t", Accept = " " } })
    assert.matches("\r\nX%-Empty:[ ]*\r\n", got)
    assert.matches("\r\nX%-Space:[ ]*\r\n", got) -- blank is empty: HTTP trims the value
    assert.matches("\r\nX%-Tab:[ ]*\r\n", got)
    assert.matches("\r\nAccept:[ ]*\r\n", got)
    assert.not_matches("%*/%*", got) -- libcurl's default Accept is replaced, not added
    local blocks = {}
    for _, headers in ipairs { { ["X-Empty"] = "", ["Content-Type"] = "" },
                               { ["X-Empty"] = " ", ["Content-Type"] = "\t " },
                               function() return { ["X-Empty"] = "", ["Content-Type"] = "" } end } do
      local up = wsup.uploader { url = nginx.url .. "/headers", headers = headers,
                                 classify = function(res) blocks[#blocks + 1] = "\r\n" .. res.body; return "ok" end }
      up:enqueue { a = 1 }
      assert.is_true(up:flush(5000))
      up:close()
    end
    assert.equals(3, #blocks)
    for _, block in ipairs(blocks) do
      assert.matches("\r\nX%-Empty:[ ]*\r\n", block)
      assert.matches("\r\nContent%-Type:[ ]*\r\n", block) -- the caller's, empty: it replaces application/json
      assert.not_matches("application/json", block)
    end
  end)

  it("takes 64 request headers (its limit) inside a task, and an uploader 63 (one is the Content-Type)", function()
    assert(nginx, why)
    local many = {}
    for i = 1, 64 do many["X-H" .. i] = "v" .. i end
    local got
    wsup.spawn(function()
      got = header_block_of(wsup.http.request { url = nginx.url .. "/headers", headers = many })
    end)
    wsup.run(5000)
    for i = 1, 64 do assert.matches("\r\nX%-H" .. i .. ": v" .. i .. "\r\n", got) end
    many["X-H64"] = nil
    local block
    wsup.spawn(function()
      local up = wsup.uploader { url = nginx.url .. "/headers", headers = many,
                                 classify = function(res) block = "\r\n" .. res.body; return "ok" end }
      up:enqueue { a = 1 }
      assert(up:flush(5000))
      up:close()
    end)
    wsup.run(5000)
    for i = 1, 63 do assert.matches("\r\nX%-H" .. i .. ": v" .. i .. "\r\n", block) end
    assert.matches("\r\nContent%-Type: application/json\r\n", block)
  end)
end)
