-- r:chaos{...}: the reference receiver's probabilistic faults (failures with or without
-- Retry-After, delays, dropped connections), and an uploader that gets through them.
-- Everything on 127.0.0.1 and on the real clock; every wait is bounded.
local wsup = require "wsup"

-- One PUT over a fresh connection (curl; a reused connection that gets no answer is
-- silently retried by libcurl, which would blur the counts). Returns the status (0 when
-- nothing came back), curl's exit code, the Retry-After header or nil, and the seconds.
local function put(url, body)
  local p = assert(io.popen(("env -u LD_PRELOAD curl -s --max-time 10 -D - -o /dev/null "
    .. "-w '\\n%%{http_code} %%{time_total}' -X PUT --data-binary '%s' '%s' 2>/dev/null; echo \" $?\"")
    :format(body, url)))
  local out = p:read("a")
  p:close()
  local code, secs, rc = out:match("(%d+) ([%d.]+) (%d+)%s*$")
  assert(code, "unexpected curl output: " .. out)
  return tonumber(code), tonumber(rc), out:match("[Rr]etry%-[Aa]fter: ([^\r\n]*)"), tonumber(secs)
end

-- n PUTs through wsup.http.request; the list of their statuses (0 for no answer).
local function statuses(url, n)
  local got = {}
  for i = 1, n do
    local res = wsup.http.request { method = "PUT", url = url, body = '{"i":' .. i .. "}", timeout_ms = 5000 }
    got[i] = res and res.status or 0
  end
  return got
end

local function count(list, v)
  local n = 0
  for _, x in ipairs(list) do n = n + (x == v and 1 or 0) end
  return n
end

describe("receiver:chaos", function()
  local r, ups

  before_each(function()
    wsup.clock("real")
    r = assert(wsup.receiver())
    ups = {} -- closed after each test, even a failed one
  end)

  after_each(function()
    for _, up in ipairs(ups) do up:close() end
    r:close()
  end)

  it("fail = 1 answers a status from statuses, with Retry-After when asked, and applies nothing", function()
    r:chaos { fail = 1, statuses = { 503 }, retry_after_value = 7 }
    local status, rc, retry = put(r.url .. "/worker", '{"a":1}')
    assert.same({ 503, 0, "7" }, { status, rc, retry })
    r:chaos { fail = 1, statuses = { 500 } } -- no retry_after_value: no header
    status, rc, retry = put(r.url .. "/worker", '{"a":1}')
    assert.same({ 500, 0 }, { status, rc })
    assert.is_nil(retry)
    r:chaos { fail = 1, statuses = { 429 }, retry_after = 1 } -- the default value is "1"
    status, rc, retry = put(r.url .. "/worker", '{"a":1}')
    assert.same({ 429, 0, "1" }, { status, rc, retry })
    assert.is_nil(r:state())
    assert.same({ requests = 3, [500] = 1, [503] = 1, [429] = 1 }, r:stats())
  end)

  it("drop = 1 closes the connection without an answer and does not apply the PUT", function()
    r:chaos { drop = 1 }
    local status, rc = put(r.url .. "/worker", '{"a":1}')
    assert.equal(0, status)
    assert.equal(52, rc) -- curl: empty reply from server
    assert.is_nil(r:state())
    assert.same({ requests = 1, dropped = 1, dropped_applied = 0 }, r:stats())
    local res, _, code = wsup.http.request { method = "PUT", url = r.url .. "/worker", body = "{}" }
    assert.is_nil(res)
    assert.equal("reset", code)
    assert.is_nil(r:state())
  end)

  it("drop_after_apply = 1 applies the PUT, then closes the connection without an answer", function()
    r:chaos { drop_after_apply = 1 }
    local status, rc = put(r.url .. "/worker", '{"a":1,"external_metadata":{"k":1}}')
    assert.same({ 0, 52 }, { status, rc })
    assert.same({ a = 1, external_metadata = { k = 1 } }, r:state())
    assert.same({ requests = 1, dropped = 1, dropped_applied = 1 }, r:stats())
  end)

  it("leaves GETs, other paths and other methods alone", function()
    r:chaos { drop = 0.5, fail = 0.5 }
    for _ = 1, 5 do
      local res = assert(wsup.http.request { url = r.url .. "/worker" })
      assert.equal(200, res.status)
      assert.equal(404, assert(wsup.http.request { method = "PUT", url = r.url .. "/nope", body = "{}" }).status)
      assert.equal(405, assert(wsup.http.request { method = "POST", url = r.url .. "/worker", body = "{}" }).status)
    end
  end)

  it("lets an armed fail() go first", function()
    r:chaos { drop = 1 }
    r:fail(1, 429, 2)
    local status, _, retry = put(r.url .. "/worker", "{}")
    assert.same({ 429, "2" }, { status, retry })
    assert.equal(0, (put(r.url .. "/worker", "{}")))
  end)

  it("chaos(nil) and chaos() turn it off", function()
    r:chaos { fail = 1 } -- default statuses: 500 or 503
    local status = put(r.url .. "/worker", "{}")
    assert.is_true(status == 500 or status == 503, "got " .. status)
    r:chaos(nil)
    assert.equal(200, (put(r.url .. "/worker", '{"a":1}')))
    r:chaos { drop = 1 }
    r:chaos()
    assert.equal(200, (put(r.url .. "/worker", '{"a":2}')))
    assert.same({ a = 2 }, r:state())
  end)

  it("draws outcomes from a seeded generator: the same seed repeats them, another differs", function()
    local url = r.url .. "/worker"
    local opts = { fail = 0.3, statuses = { 500, 502, 503 }, seed = 42 }
    r:chaos(opts)
    local a = statuses(url, 200)
    r:chaos(opts) -- reseeds
    local b = statuses(url, 200)
    assert.same(a, b)
    -- Only the 200s were applied: the state holds the last of them.
    local last = 0
    for i, s in ipairs(b) do
      if s == 200 then last = i end
    end
    assert.same({ i = last }, r:state())
    -- About 30% fail, spread over the three statuses; no other status appears.
    local failed = count(a, 500) + count(a, 502) + count(a, 503)
    assert.is_true(failed >= 35 and failed <= 85, "failed " .. failed .. " of 200")
    for _, s in ipairs { 500, 502, 503 } do assert.is_true(count(a, s) > 0, "no " .. s) end
    assert.equal(200, failed + count(a, 200))
    opts.seed = 43
    r:chaos(opts)
    assert.are_not.same(a, statuses(url, 200))
  end)

  it("retry_after is the probability that a failure carries the header", function()
    r:chaos { fail = 1, statuses = { 503 }, retry_after = 0.5, retry_after_value = "1", seed = 7 }
    local with = 0
    for i = 1, 60 do
      local res = assert(wsup.http.request { method = "PUT", url = r.url .. "/worker", body = '{"i":' .. i .. "}" })
      assert.equal(503, res.status)
      if res.headers["retry-after"] then
        assert.equal("1", res.headers["retry-after"])
        with = with + 1
      end
    end
    assert.is_true(with >= 15 and with <= 45, with .. " of 60 had Retry-After")
  end)

  it("delay_ms holds each chaos PUT back by a time in [lo, hi], drops and failures too", function()
    r:chaos { delay_ms = 150 }
    local status, _, _, secs = put(r.url .. "/worker", '{"a":1}')
    assert.equal(200, status)
    assert.is_true(secs >= 0.14, "took " .. secs)
    r:chaos { delay_ms = { 100, 200 }, drop = 1 }
    status, _, _, secs = put(r.url .. "/worker", '{"a":2}')
    assert.equal(0, status)
    assert.is_true(secs >= 0.09, "took " .. secs)
    r:chaos { delay_ms = { 0, 0 }, fail = 1 }
    status, _, _, secs = put(r.url .. "/worker", '{"a":3}')
    assert.is_true(status == 500 or status == 503, "got " .. status)
    assert.is_true(secs < 0.09, "took " .. secs)
    r:chaos { delay_ms = 300 }
    local t0 = wsup.now()
    assert.equal(200, assert(wsup.http.request { url = r.url .. "/worker" }).status) -- a GET: no delay
    assert.is_true(wsup.now() - t0 < 250)
    assert.same({ a = 1 }, r:state())
  end)

  it("rejects bad or unknown options with an error naming the option, and changes nothing", function()
    r:chaos { fail = 1, statuses = { 503 } }
    local cases = {
      { { fail = 1.5 }, "'fail'" }, { { fail = -0.1 }, "'fail'" }, { { drop = "x" }, "'drop'" },
      { { drop = 0 / 0 }, "'drop'" }, { { drop_after_apply = 2 }, "'drop_after_apply'" },
      { { fail = 0.6, drop = 0.5 }, "at most 1" }, { { retry_after = 1.1 }, "'retry_after'" },
      { { retry_after_value = "a\r\nX: 1" }, "control character" },
      { { retry_after_value = string.rep("9", 64) }, "longer than 63" },
      { { retry_after_value = -1 }, "'retry_after_value'" }, { { statuses = {} }, "'statuses'" },
      { { statuses = { 99 } }, "'statuses'" }, { { statuses = { 1000 } }, "'statuses'" },
      { { statuses = 503 }, "'statuses'" }, { { statuses = { 503.5 } }, "'statuses'" },
      { { statuses = { 500, 501, 502, 503, 504, 505, 506, 507, 508, 509, 510, 511, 512, 513, 514, 515, 516 } },
        "'statuses'" },
      { { delay_ms = -1 }, "'delay_ms'" }, { { delay_ms = { 20, 10 } }, "'delay_ms'" },
      { { delay_ms = { 1 } }, "'delay_ms'" }, { { delay_ms = "5" }, "'delay_ms'" },
      { { delay_ms = 1.5 }, "'delay_ms'" }, { { delay_ms = { "1", "2" } }, "'delay_ms'" },
      { { statuses = { "503" } }, "'statuses'" }, { { seed = 1.5 }, "'seed'" }, { { seed = "1" }, "'seed'" },
      { { fial = 0.3 }, "unknown option 'fial'" }, { { [1] = 0.3 }, "option names must be strings" },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(r.chaos, r, c[1])
      assert.is_false(ok, c[2])
      assert.truthy(tostring(err):find(c[2], 1, true), tostring(err) .. " (want " .. c[2] .. ")")
    end
    assert.has_error(function() r:chaos(0.3) end)
    assert.equal(503, (put(r.url .. "/worker", "{}"))) -- the earlier settings still hold
  end)

  it("closes promptly with a delayed drop parked, and the client sees the connection closed", function()
    local c = assert(wsup.receiver())
    c:chaos { drop = 1, delay_ms = 3000 }
    local out = os.tmpname()
    os.execute(("(env -u LD_PRELOAD curl -s -o /dev/null --max-time 10 -X PUT --data-binary '{}' '%s/worker'; "
      .. "echo $? > %s) &"):format(c.url, out))
    local deadline = wsup.now() + 5000
    while c:stats().requests == 0 and wsup.now() < deadline do wsup.sleep(10) end
    assert.equal(1, c:stats().requests) -- decided, and parked for 3 s
    local t0 = wsup.now()
    c:close()
    assert.is_true(wsup.now() - t0 < 1000, "close took " .. (wsup.now() - t0) .. " ms")
    local rc
    while not rc and wsup.now() < deadline do
      local f = io.open(out)
      rc = f and tonumber(f:read("a"))
      if f then f:close() end
      if not rc then wsup.sleep(20) end
    end
    os.remove(out)
    assert.equal(52, rc) -- curl: empty reply from server
  end)

  it("raises once the receiver is closed", function()
    local c = assert(wsup.receiver())
    c:close()
    assert.has_error(function() c:chaos { fail = 0.5 } end, "receiver is closed")
    assert.has_error(function() c:chaos(nil) end, "receiver is closed")
  end)

  it("an uploader gets through failures, Retry-After, delays and drops, ending in the folded state", function()
    r:chaos { fail = 0.3, statuses = { 500, 503 }, retry_after = 0.3, retry_after_value = "1", delay_ms = { 0, 5 },
      drop = 0.1, drop_after_apply = 0.1, seed = 5 }
    local want = {}
    for u = 1, 4 do
      ups[u] = wsup.uploader { url = ("%s/worker/%d"):format(r.url, u), base_delay_ms = 1, max_delay_ms = 10,
        jitter_ms = 2, max_retry_after_ms = 20, timeout_ms = 2000 }
      want[u] = { external_metadata = {} }
    end
    for step = 1, 40 do
      for u = 1, 4 do
        local k = "k" .. (step % 5)
        local v = step % 7 == 0 and wsup.null or step
        ups[u]:enqueue { worker_status = "s" .. step, external_metadata = { [k] = v } }
        want[u].worker_status = "s" .. step
        want[u].external_metadata[k] = v ~= wsup.null and v or nil
      end
      if step % 3 == 0 then wsup.sleep(2) end
    end
    for u = 1, 4 do
      assert.is_true(ups[u]:flush(20000), "uploader " .. u .. " did not flush")
      assert.same(want[u], r:state(("/worker/%d"):format(u)))
    end
    local st = r:stats()
    assert.is_true((st[500] or 0) + (st[503] or 0) > 0)
    assert.is_true((st.dropped or 0) > 0, "nothing was dropped")
  end)
end)
