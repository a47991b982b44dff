-- examples/custom_policy.lua against the embedded receiver (real clock, 127.0.0.1),
-- with faults injected by the receiver: r:fail(n, status, retry_after).
-- Run: build/wsup test examples/spec   (also part of the main suite)
local wsup = require "wsup"

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local policy_mod = dofile(HERE .. "/../custom_policy.lua")

local SECRET = "receiver-secret"

describe("custom_policy against the embedded receiver", function()
  local rcv, ups, level

  before_each(function()
    wsup.clock("real")
    level = wsup.log_level()
    wsup.log_level("error")
    rcv = assert(wsup.receiver { port = 0 })
    ups = {}
  end)

  after_each(function()
    for _, up in ipairs(ups) do up:close() end
    wsup.run(2000)
    rcv:close()
    wsup.log_level(level)
  end)

  -- The real wsup.http.request, wrapped so each request's signature is checked and
  -- the request counted; the policy under test gets it through its `http` parameter.
  local function setup(path, token, uopts)
    local spy = { n = 0, bad_signatures = 0, auth = {} }
    function spy.http(req)
      spy.n = spy.n + 1
      if req.headers["X-Signature"] ~= "sha256=" .. wsup.hmac_sha256(SECRET, req.body) then
        spy.bad_signatures = spy.bad_signatures + 1
      end
      spy.auth[#spy.auth + 1] = req.headers.Authorization or "-"
      return wsup.http.request(req)
    end
    local p = policy_mod.new { url = rcv.url .. path, secret = SECRET, token = token, http = spy.http }
    uopts = uopts or {}
    uopts.send = p.send
    uopts.base_delay_ms = uopts.base_delay_ms or 20
    uopts.jitter_ms = 0
    local up = wsup.uploader(uopts)
    ups[#ups + 1] = up
    return up, spy, p
  end

  it("delivers signed PUTs: the server's state is the coalesced patch, integers exact", function()
    local up, spy = setup("/worker/a")
    up:enqueue { worker_status = "busy", external_metadata = { id = 123456789012345678, gone = 1 } }
    up:enqueue { external_metadata = { gone = wsup.null, max = math.maxinteger } }
    assert.is_true(up:flush(5000))
    assert.same({ worker_status = "busy", external_metadata = { id = 123456789012345678, max = math.maxinteger } },
      rcv:state("/worker/a"))
    assert.equal(1, spy.n)
    assert.equal(0, spy.bad_signatures)
  end)

  it("r:fail(1, 401): fetches a fresh token and delivers in the same attempt", function()
    rcv:fail(1, 401)
    local n = 0
    local up, spy, p = setup("/worker/auth", function() n = n + 1 return "t" .. n end)
    up:enqueue { worker_status = "idle" }
    assert.is_true(up:flush(5000))
    assert.same({ "Bearer t1", "Bearer t2" }, spy.auth)
    assert.equal(1, up:stats().attempts)
    assert.equal(1, p.stats.refreshes)
    local st = rcv:stats()
    assert.equal(1, st[401])
    assert.equal(1, st[200])
    assert.same({ worker_status = "idle" }, rcv:state("/worker/auth"))
  end)

  it("r:fail(1, 503, 1): waits at least the Retry-After second, then delivers", function()
    rcv:fail(1, 503, 1)
    local up = setup("/worker/ra")
    local t0 = wsup.now()
    up:enqueue { worker_status = "busy" }
    assert.is_true(up:flush(5000))
    local waited = wsup.now() - t0
    assert.is_true(waited >= 1000 and waited < 2500, waited .. " ms")
    assert.equal(2, up:stats().attempts)
    assert.same({ worker_status = "busy" }, rcv:state("/worker/ra"))
  end)

  it("r:fail(2, 503) without Retry-After: backs off and retries until delivered", function()
    rcv:fail(2, 503)
    local up, spy = setup("/worker/r")
    up:enqueue { n = 1 }
    assert.is_true(up:flush(5000))
    assert.equal(3, spy.n)
    assert.equal(2, up:stats().failures)
    assert.equal(0, spy.bad_signatures)
  end)

  it("r:fail(1, 400): the payload is dropped, not retried, and the next patch goes through", function()
    rcv:fail(1, 400)
    local up = setup("/worker/d")
    up:enqueue { bad = true }
    assert.is_true(up:flush(5000))
    assert.equal(1, up:stats().dropped)
    assert.is_nil(rcv:state("/worker/d"))
    up:enqueue { good = true }
    assert.is_true(up:flush(5000))
    assert.same({ good = true }, rcv:state("/worker/d"))
  end)

  it("a persistent 401 keeps the state and delivers once the server accepts the token", function()
    rcv:fail(4, 401)
    local n = 0
    local up = setup("/worker/p", function() n = n + 1 return "t" .. n end, { base_delay_ms = 20, max_delay_ms = 40 })
    up:enqueue { worker_status = "busy" }
    assert.is_true(up:flush(5000))
    -- two attempts of (token, refresh after 401) fail; the third attempt's token works
    assert.equal(5, n)
    assert.equal(3, up:stats().attempts)
    assert.same({ worker_status = "busy" }, rcv:state("/worker/p"))
  end)
end)
