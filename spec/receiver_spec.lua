-- wsup.receiver (the reference server as Lua userdata) and `build/wsup serve`.
-- Everything binds to 127.0.0.1; every wait is bounded, so a broken build fails instead of hanging.
local wsup = require "wsup"
local cjson = require "cjson"
local cli = require "support.cli"

local WSUP = cli.WSUP
local BIG = 123456789012345678

local sleep, slurp, spit = cli.sleep, cli.slurp, cli.spit

-- Polls fn every 50 ms for up to secs seconds; returns its first truthy result or fails.
local function wait_for(what, fn, secs)
  for _ = 1, math.ceil((secs or 10) / 0.05) do
    local v = fn()
    if v then return v end
    sleep(0.05)
  end
  error("timed out waiting for " .. what)
end

-- The one place that speaks HTTP (curl for now; wsup.http.request later).
-- Returns the status (0 when nothing answered), the body, the headers (lowercase names)
-- and the seconds the exchange took.
local function http(method, url, body, opts)
  opts = opts or {}
  local file
  local cmd = { "env -u LD_PRELOAD curl -s --max-time 10 -D - -o - -w '\\n%{http_code} %{time_total}' -X", method }
  if body then
    file = os.tmpname()
    spit(file, body)
    cmd[#cmd + 1] = "-H 'Content-Type: application/json' --data-binary @" .. file
  end
  if opts.chunked then cmd[#cmd + 1] = "-H 'Transfer-Encoding: chunked'" end
  cmd[#cmd + 1] = "'" .. url .. "' 2>/dev/null"
  local p = assert(io.popen(table.concat(cmd, " ")))
  local out = p:read("a")
  p:close()
  if file then os.remove(file) end
  local rest, code, secs = out:match("^(.*)\n(%d+) ([%d.]+)$")
  assert(rest, "unexpected curl output: " .. out)
  local head, resp = rest:match("^(.-\r\n)\r\n(.*)$")
  local headers = {}
  for name, value in (head or ""):gmatch("([%w-]+):%s*([^\r\n]*)\r\n") do headers[name:lower()] = value end
  return tonumber(code), resp or rest, headers, tonumber(secs)
end

local function put(url, body, opts) return http("PUT", url, body, opts) end

describe("wsup.receiver", function()
  local r

  before_each(function()
    r = assert(wsup.receiver { port = 0 })
  end)

  after_each(function()
    r:close()
  end)

  it("stores a string holding NUL (\\u0000) exactly", function()
    local status, body = put(r.url .. "/worker/nul", '{"s":"a\\u0000b"}')
    assert.equals(200, status, body)
    assert.equals("a\0b", r:state("/worker/nul").s)
  end)

  it("binds an ephemeral port on 127.0.0.1 and reports it in url, port and tostring", function()
    assert.equal("userdata", type(r))
    assert.equal("integer", math.type(r.port))
    assert.is_true(r.port > 0)
    assert.equal("http://127.0.0.1:" .. r.port, r.url)
    assert.equal("wsup.receiver " .. r.url .. " (open)", tostring(r))
    assert.equal(200, (http("GET", r.url .. "/worker")))
  end)

  it("has no state for a path never written (state is nil, GET answers {})", function()
    assert.is_nil(r:state())
    assert.is_nil(r:state("/worker/x"))
    local status, body = http("GET", r.url .. "/worker")
    assert.equal(200, status)
    assert.equal("{}", body)
  end)

  it("answers a PUT with 200 and the new state, merging PUTs per path independently", function()
    local status, body = put(r.url .. "/worker", '{"worker_status":"busy"}')
    assert.equal(200, status)
    assert.same({ worker_status = "busy" }, cjson.decode(body))
    status, body = put(r.url .. "/worker", '{"step":1}')
    assert.equal(200, status)
    assert.same({ worker_status = "busy", step = 1 }, cjson.decode(body))
    assert.equal(200, (put(r.url .. "/worker/b", '{"other":true}')))
    assert.same({ worker_status = "busy", step = 1 }, r:state())
    assert.same({ worker_status = "busy", step = 1 }, r:state("/worker"))
    assert.same({ other = true }, r:state("/worker/b"))
    local _, got = http("GET", r.url .. "/worker/b")
    assert.same({ other = true }, cjson.decode(got))
  end)

  it("replaces top-level values whole, including nested objects under other keys", function()
    assert.equal(200, (put(r.url .. "/worker", '{"a":{"x":1,"y":2},"s":"one","l":[1,2,3]}')))
    assert.equal(200, (put(r.url .. "/worker", '{"a":{"x":3},"s":"two","l":[4]}')))
    assert.same({ a = { x = 3 }, s = "two", l = { 4 } }, r:state())
  end)

  it("merges merge keys one level deep, a null member deletes, and deeper objects are replaced", function()
    assert.equal(200, (put(r.url .. "/worker", '{"external_metadata":{"a":1,"b":2,"n":{"p":1,"q":2}}}')))
    local status, body = put(r.url .. "/worker", '{"external_metadata":{"b":null,"c":3,"n":{"p":9}}}')
    assert.equal(200, status)
    local want = { external_metadata = { a = 1, c = 3, n = { p = 9 } } }
    assert.same(want, cjson.decode(body))
    assert.same(want, r:state())
    assert.equal(200, (put(r.url .. "/worker", '{"internal_metadata":{"k":1}}')))
    assert.equal(200, (put(r.url .. "/worker", '{"internal_metadata":{"j":2}}')))
    assert.same({ k = 1, j = 2 }, r:state().internal_metadata)
  end)

  it("keeps a top-level null, which r:state() returns as wsup.null", function()
    assert.equal(200, (put(r.url .. "/worker", '{"gone":null,"here":1}')))
    local s = r:state()
    assert.equal(wsup.null, s.gone)
    assert.equal(1, s.here)
  end)

  it("honours the merge_keys option, and merge_keys = {} merges nothing", function()
    local m <close> = assert(wsup.receiver { merge_keys = { "m" } })
    assert.equal(200, (put(m.url .. "/worker", '{"m":{"a":1},"external_metadata":{"a":1}}')))
    assert.equal(200, (put(m.url .. "/worker", '{"m":{"b":2},"external_metadata":{"b":2}}')))
    assert.same({ m = { a = 1, b = 2 }, external_metadata = { b = 2 } }, m:state())
    local none <close> = assert(wsup.receiver { merge_keys = {} })
    assert.equal(200, (put(none.url .. "/worker", '{"external_metadata":{"a":1}}')))
    assert.equal(200, (put(none.url .. "/worker", '{"external_metadata":{"b":2}}')))
    assert.same({ external_metadata = { b = 2 } }, none:state())
  end)

  it("reads big integers back exactly, as Lua integers", function()
    local status, body = put(r.url .. "/worker",
      '{"max":9223372036854775807,"big":123456789012345678,"min":-9223372036854775808,"f":0.5}')
    assert.equal(200, status)
    assert.truthy(body:find('"max":9223372036854775807', 1, true))
    assert.truthy(body:find('"big":123456789012345678', 1, true))
    local s = r:state()
    assert.equal("integer", math.type(s.max))
    assert.equal(math.maxinteger, s.max)
    assert.equal("integer", math.type(s.big))
    assert.equal(BIG, s.big)
    assert.equal(math.mininteger, s.min)
    assert.equal("float", math.type(s.f))
    assert.equal(0.5, s.f)
  end)

  it("returns a fresh table from each r:state() call", function()
    assert.equal(200, (put(r.url .. "/worker", '{"a":{"x":1}}')))
    local s1 = r:state()
    s1.a.x = 99
    assert.same({ a = { x = 1 } }, r:state())
    assert.are_not.equal(s1, r:state())
  end)

  it("answers malformed JSON with 400 and a reason, changes nothing, and goes on serving", function()
    assert.equal(200, (put(r.url .. "/worker", '{"a":1}')))
    local status, body = put(r.url .. "/worker", '{"a":')
    assert.equal(400, status)
    local err = cjson.decode(body).error
    assert.equal("string", type(err))
    assert.truthy(err:find("line 1", 1, true), err)
    assert.same({ a = 1 }, r:state())
    assert.equal(200, (put(r.url .. "/worker", '{"b":2}')))
    assert.same({ a = 1, b = 2 }, r:state())
  end)

  it("answers a body that is not an object with 400, and goes on serving", function()
    for _, body in ipairs { "[1,2]", '"text"', "42", "null", "" } do
      local status, resp = put(r.url .. "/worker", body)
      assert.equal(400, status, body)
      assert.truthy(cjson.decode(resp).error, body)
    end
    assert.is_nil(r:state())
    assert.equal(200, (put(r.url .. "/worker", '{"ok":true}')))
  end)

  it("answers paths other than /worker and /worker/... with 404, and goes on serving", function()
    for _, path in ipairs { "/", "/other", "/workers", "/worker2", "/api/worker" } do
      assert.equal(404, (put(r.url .. path, '{"a":1}')), path)
      assert.equal(404, (http("GET", r.url .. path)), path)
    end
    assert.is_nil(r:state("/other"))
    assert.equal(200, (put(r.url .. "/worker/1", '{"a":1}')))
  end)

  it("answers DELETE and POST with 405 and Allow: GET, PUT, and goes on serving", function()
    assert.equal(200, (put(r.url .. "/worker", '{"a":1}')))
    local status, _, headers = http("DELETE", r.url .. "/worker")
    assert.equal(405, status)
    assert.equal("GET, PUT", headers.allow)
    assert.equal(405, (http("POST", r.url .. "/worker", '{"a":2}')))
    assert.same({ a = 1 }, r:state())
    assert.equal(200, (put(r.url .. "/worker", '{"b":2}')))
  end)

  it("answers a body over max_body with 413 (with or without Content-Length), and goes on serving", function()
    local small <close> = assert(wsup.receiver { max_body = 64 })
    local fits = '{"s":"' .. string.rep("x", 64 - 8) .. '"}'
    assert.equal(64, #fits)
    local over = '{"s":"' .. string.rep("x", 65 - 8) .. '"}'
    assert.equal(413, (put(small.url .. "/worker", over)))
    assert.equal(413, (put(small.url .. "/worker", over, { chunked = true })))
    assert.is_nil(small:state())
    assert.equal(200, (put(small.url .. "/worker", fits)))
    assert.equal(200, (put(small.url .. "/worker/c", fits, { chunked = true })))
    assert.equal(string.rep("x", 56), small:state("/worker/c").s)
  end)

  it("fail(2, 503, 1) answers the next two PUTs 503 with Retry-After: 1, unapplied, then 200", function()
    r:fail(2, 503, 1)
    for i = 1, 2 do
      local status, _, headers = put(r.url .. "/worker", '{"n":' .. i .. "}")
      assert.equal(503, status)
      assert.equal("1", headers["retry-after"])
    end
    assert.is_nil(r:state())
    local status, _, headers = put(r.url .. "/worker", '{"n":3}')
    assert.equal(200, status)
    assert.is_nil(headers["retry-after"])
    assert.same({ n = 3 }, r:state())
  end)

  it("fail passes a string retry_after as is, sends none without one, and fail(0, ...) disarms", function()
    local date = "Wed, 21 Oct 2015 07:28:00 GMT"
    r:fail(1, 429, date)
    local status, _, headers = put(r.url .. "/worker", "{}")
    assert.equal(429, status)
    assert.equal(date, headers["retry-after"])
    r:fail(1, 500)
    status, _, headers = put(r.url .. "/worker", "{}")
    assert.equal(500, status)
    assert.is_nil(headers["retry-after"])
    r:fail(5, 503)
    r:fail(0, 503)
    assert.equal(200, (put(r.url .. "/worker", "{}")))
  end)

  it("fail only counts PUTs to accepted paths", function()
    r:fail(1, 503)
    assert.equal(200, (http("GET", r.url .. "/worker")))
    assert.equal(404, (put(r.url .. "/nope", "{}")))
    assert.equal(503, (put(r.url .. "/worker", "{}")))
    assert.equal(200, (put(r.url .. "/worker", "{}")))
  end)

  it("fail rejects bad arguments", function()
    assert.has_error(function() r:fail(1, 42) end)
    assert.has_error(function() r:fail(1, 1000) end)
    assert.has_error(function() r:fail(-1, 503) end)
    assert.has_error(function() r:fail(1, 503, 1.5) end)
    assert.has_error(function() r:fail(1, 503, -1) end)
    assert.has_error(function() r:fail(1, 503, {}) end)
    assert.has_error(function() r:fail(1, 503, "a\r\nX-Evil: 1") end)
    assert.has_error(function() r:fail(1, 503, string.rep("9", 64)) end)
    assert.equal(200, (put(r.url .. "/worker", "{}")))
  end)

  it("fail and chaos refuse 1xx statuses, which are never a final answer (the client would wait)", function()
    for _, s in ipairs { 100, 101, 103, 199 } do
      assert.has_error(function() r:fail(1, s) end, "bad argument #2 to 'fail' (status must be in 200..999)")
      assert.has_error(function() r:chaos { fail = 1, statuses = { 503, s } } end,
        "receiver:chaos: option 'statuses' must hold statuses in 200..999")
    end
    r:fail(1, 200)
    r:chaos { fail = 0.5, statuses = { 204, 999 }, seed = 1 }
    r:chaos(nil)
  end)

  it("keeps a path with %00 apart from the path it would be cut to", function()
    assert.equal(200, (put(r.url .. "/worker/a", '{"who":"a"}')))
    assert.equal(200, (put(r.url .. "/worker/a%00b", '{"who":"a%00b"}')))
    assert.equal(200, (put(r.url .. "/worker/c%2Fd", '{"who":"c/d"}'))) -- other escapes still decode
    assert.same({ who = "a" }, r:state("/worker/a"))
    assert.same({ who = "a%00b" }, r:state("/worker/a%00b"))
    assert.same({ who = "c/d" }, r:state("/worker/c/d"))
  end)

  it("delay(ms) holds every response back that long, and delay(0) turns it off", function()
    r:delay(400)
    local status, _, _, secs = put(r.url .. "/worker", '{"a":1}')
    assert.equal(200, status)
    assert.is_true(secs >= 0.39, "took " .. secs .. " s")
    status, _, _, secs = http("GET", r.url .. "/nope")
    assert.equal(404, status)
    assert.is_true(secs >= 0.39, "took " .. secs .. " s")
    r:delay(0)
    status, _, _, secs = put(r.url .. "/worker", '{"a":2}')
    assert.equal(200, status)
    assert.is_true(secs < 0.35, "took " .. secs .. " s")
    assert.has_error(function() r:delay(-1) end)
  end)

  it("stats counts every request, and each status under its integer code", function()
    assert.same({ requests = 0 }, r:stats())
    put(r.url .. "/worker", '{"a":1}')
    put(r.url .. "/worker", '{"a":2}')
    http("GET", r.url .. "/worker")
    put(r.url .. "/worker", "nope")
    put(r.url .. "/elsewhere", "{}")
    http("DELETE", r.url .. "/worker")
    r:fail(1, 503)
    put(r.url .. "/worker", "{}")
    assert.same({ requests = 7, [200] = 3, [400] = 1, [404] = 1, [405] = 1, [503] = 1 }, r:stats())
  end)

  it("rejects bad or unknown options with an error naming the option", function()
    local cases = {
      { { port = -1 }, "'port'" }, { { port = 65536 }, "'port'" }, { { port = 1.5 }, "'port'" },
      { { port = "80" }, "'port'" }, { { host = "localhost" }, "'host'" }, { { host = 1 }, "'host'" },
      { { max_body = 0 }, "'max_body'" }, { { max_body = "big" }, "'max_body'" },
      { { merge_keys = "m" }, "'merge_keys'" }, { { merge_keys = { 1 } }, "'merge_keys'" },
      { { bogus = 1 }, "unknown option 'bogus'" }, { { [1] = "x" }, "option names must be strings" },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(wsup.receiver, c[1])
      assert.is_false(ok, c[2])
      assert.truthy(tostring(err):find(c[2], 1, true), tostring(err))
    end
    assert.has_error(function() wsup.receiver(5) end)
  end)

  it("accepts no options at all", function()
    local d <close> = assert(wsup.receiver())
    assert.truthy(d.url:match("^http://127%.0%.0%.1:%d+$"))
  end)

  it("returns nil and a message, without raising, when the port is in use", function()
    local r2, err = wsup.receiver { port = r.port }
    assert.is_nil(r2)
    assert.equal("string", type(err))
    assert.truthy(err:find("in use", 1, true), err)
    assert.equal(200, (http("GET", r.url .. "/worker")))
  end)

  it("close is idempotent, stops serving, and leaves url, port and tostring readable", function()
    local url, port = r.url, r.port
    r:close()
    r:close()
    assert.equal(url, r.url)
    assert.equal(port, r.port)
    assert.equal("wsup.receiver " .. url .. " (closed)", tostring(r))
    assert.equal(0, (http("GET", url .. "/worker")))
    assert.has_error(function() r:state() end, "receiver is closed")
    assert.has_error(function() r:stats() end, "receiver is closed")
    assert.has_error(function() r:fail(1, 503) end, "receiver is closed")
    assert.has_error(function() r:delay(1) end, "receiver is closed")
  end)

  it("closes at the end of the scope of `local x <close>`", function()
    local url, held
    do
      local c <close> = assert(wsup.receiver())
      url, held = c.url, c
      assert.equal(200, (http("GET", url .. "/worker")))
    end
    assert.equal("wsup.receiver " .. url .. " (closed)", tostring(held))
    assert.equal(0, (http("GET", url .. "/worker")))
  end)

  it("closes when collected", function()
    local g = assert(wsup.receiver())
    local url = g.url
    assert.equal(200, (http("GET", url .. "/worker")))
    g = nil -- luacheck: ignore 311
    collectgarbage()
    collectgarbage()
    assert.equal(0, (http("GET", url .. "/worker")))
  end)

  it("is not loop work: wsup.run() returns promptly with a receiver open, which keeps serving", function()
    -- In a child, under timeout: a hang fails this test instead of the suite. After
    -- wsup.run() the child prints its url and keeps the receiver open until `done` exists.
    local file, done = os.tmpname(), os.tmpname()
    os.remove(done)
    spit(file, [[
      package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
      package.cpath = "build/?.so;" .. package.cpath
      local wsup = require "wsup"
      local r = assert(wsup.receiver())
      wsup.after(20, function() end)
      wsup.run()
      io.write("returned ", r.url, "\n")
      io.flush()
      for _ = 1, 200 do
        if io.open(arg[1]) then break end
        os.execute("sleep 0.05")
      end
      r:close()
    ]])
    local p = assert(io.popen("timeout 10 lua5.4 " .. file .. " " .. done .. " </dev/null; echo rc=$?"))
    local line = p:read("l")
    local url = line and line:match("^returned (http://127%.0%.0%.1:%d+)$")
    local status = url and http("PUT", url .. "/worker", '{"after_run":1}')
    spit(done, "")
    local rest = p:read("a")
    p:close()
    os.remove(file)
    os.remove(done)
    assert.truthy(url, "child said: " .. tostring(line) .. (rest or ""))
    assert.equal(200, status)
    assert.equal("rc=0", rest:match("rc=%d+"))
  end)
end)

describe("wsup serve", function()
  local procs

  -- Starts `build/wsup serve ARGS` in the background with stdout and stderr in files;
  -- waits for its "serving on" line (or its exit) and returns a handle.
  local function serve(args)
    local s = { out = os.tmpname(), err = os.tmpname(), pidf = os.tmpname(), rcf = os.tmpname() }
    os.remove(s.rcf)
    procs[#procs + 1] = s
    assert(os.execute(string.format("(%s serve %s >%s 2>%s </dev/null & echo $! >%s; wait $!; echo $? >%s) " ..
      ">/dev/null 2>&1 </dev/null &", WSUP, args, s.out, s.err, s.pidf, s.rcf)))
    s.pid = wait_for("the pid", function() return (slurp(s.pidf) or ""):match("^(%d+)") end)
    wait_for("serving on", function()
      s.url = (slurp(s.err) or ""):match("wsup: serving on (http://%S+)\n")
      return s.url or slurp(s.rcf)
    end)
    return s
  end

  -- The exit status once the process has ended, waiting up to 10 s.
  local function status_of(s)
    return tonumber(wait_for("exit", function() return (slurp(s.rcf) or ""):match("^(%d+)") end))
  end

  local function stop(s, sig)
    assert(os.execute("kill -" .. sig .. " " .. s.pid))
    return status_of(s)
  end

  -- The first n lines of stdout, waiting up to 10 s for them.
  local function lines(s, n)
    return wait_for(n .. " log lines", function()
      local got = {}
      for l in (slurp(s.out) or ""):gmatch("([^\n]*)\n") do got[#got + 1] = l end
      return #got >= n and got
    end)
  end

  -- Runs `wsup serve ARGS` expected to exit on its own; returns exit status and stderr.
  local function serve_fails(args)
    local p = assert(io.popen("timeout 10 " .. WSUP .. " serve " .. args .. " 2>&1 >/dev/null </dev/null; echo rc=$?"))
    local out = p:read("a")
    p:close()
    return tonumber(out:match("rc=(%d+)\n$")), out
  end

  before_each(function()
    procs = {}
  end)

  after_each(function()
    for _, s in ipairs(procs) do
      if s.pid and not slurp(s.rcf) then os.execute("kill -KILL " .. s.pid .. " 2>/dev/null") end
      for _, f in ipairs { s.out, s.err, s.pidf, s.rcf } do os.remove(f) end
    end
  end)

  it("logs one compact JSON line per request on stdout, state null unless 200, and exits 0 on SIGTERM", function()
    local s = serve("--port 0")
    assert.truthy(s.url and s.url:match("^http://127%.0%.0%.1:%d+$"), slurp(s.err))
    assert.equal(200, (put(s.url .. "/worker", '{"worker_status":"busy","n":9223372036854775807}')))
    assert.equal(405, (http("DELETE", s.url .. "/worker")))
    assert.equal(400, (put(s.url .. "/worker/x", "{")))
    local got = lines(s, 3)
    assert.equal('{"method":"PUT","path":"/worker","status":200,' ..
      '"state":{"worker_status":"busy","n":9223372036854775807}}', got[1])
    assert.equal('{"method":"DELETE","path":"/worker","status":405,"state":null}', got[2])
    assert.equal('{"method":"PUT","path":"/worker/x","status":400,"state":null}', got[3])
    assert.equal(0, stop(s, "TERM"))
    assert.equal(3, #lines(s, 3))
  end)

  it("exits 0 on SIGINT, even started as a background job (SIGINT ignored by inheritance)", function()
    local s = serve("--port 0")
    assert.truthy(s.url, slurp(s.err))
    assert.equal(200, (http("GET", s.url .. "/worker")))
    assert.equal(0, stop(s, "INT"))
  end)

  it("--max-body limits PUT bodies", function()
    local s = serve("--port=0 --max-body 16")
    assert.truthy(s.url, slurp(s.err))
    assert.equal(413, (put(s.url .. "/worker", '{"s":"0123456789"}')))
    assert.equal(200, (put(s.url .. "/worker", '{"s":"01234567"}')))
    local got = lines(s, 2)
    assert.equal('{"method":"PUT","path":"/worker","status":413,"state":null}', got[1])
    assert.equal('{"method":"PUT","path":"/worker","status":200,"state":{"s":"01234567"}}', got[2])
    assert.equal(0, stop(s, "TERM"))
  end)

  it("--host binds the address given", function()
    local s = serve("--host 127.0.0.1 --port 0")
    assert.truthy(s.url and s.url:match("^http://127%.0%.0%.1:%d+$"), slurp(s.err))
    assert.equal(200, (put(s.url .. "/worker", "{}")))
    assert.equal(0, stop(s, "TERM"))
  end)

  it("exits 2 with usage on stderr for bad arguments", function()
    for _, args in ipairs { "--bogus 1", "--bogus", "--port", "--port nope", "--port 65536", "--port -1",
                            "--host localhost", "--max-body 0", "--max-body -5", "extra" } do
      local rc, err = serve_fails(args)
      assert.equal(2, rc, args)
      assert.truthy(err:find("usage: wsup serve", 1, true), args .. ": " .. err)
    end
  end)

  it("prints usage on stdout and exits 0 for --help", function()
    local p = assert(io.popen("timeout 10 " .. WSUP .. " serve --help; echo rc=$?"))
    local out = p:read("a")
    p:close()
    assert.truthy(out:find("usage: wsup serve", 1, true), out)
    assert.truthy(out:find("rc=0\n", 1, true), out)
  end)

  it("exits 1 with a message naming the address when the port is in use", function()
    -- (A bind failure by an address the machine lacks would need an address other than
    -- 127.0.0.1, which the specs never use.)
    local r <close> = assert(wsup.receiver())
    local rc, err = serve_fails("--host 127.0.0.1 --port " .. r.port)
    assert.equal(1, rc)
    assert.truthy(err:find("in use", 1, true), err)
    assert.truthy(err:find("127.0.0.1 port " .. r.port, 1, true), err)
  end)
end)
