-- Construction options, close(), flush() and stats().
local wsup = require "wsup"
local harness = require "support.harness"

local HOUR = harness.HOUR

describe("uploader lifecycle", function()
  -- recorder(opts, reply, hold_ms): send that records patches, takes hold_ms, answers reply(n) (default true)
  local H = harness.new()
  local recorder, track, keep = H.recorder, H.track, H.keep

  local function error_of(fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok, "expected an error")
    return tostring(err)
  end

  before_each(H.before)
  after_each(H.after)

  describe("options", function()
    local function ok_send() return true end

    it("accept every documented option", function()
      local up = track(wsup.uploader({
        send = ok_send, base_delay_ms = 10, max_delay_ms = 20, jitter_ms = 0,
        merge_keys = { "a", "b" }, name = "worker-1", on_error = function() end,
      }))
      assert.is_true(up:enqueue({ worker_status = "idle" }))
      assert.is_true(up:flush(HOUR))
    end)

    it("require send", function()
      assert.matches("send", error_of(wsup.uploader, {}), 1, true)
    end)

    it("reject a non-table argument", function()
      error_of(wsup.uploader, "send")
      error_of(wsup.uploader)
    end)

    -- { option, bad value, how the value reads in the test name }
    local bad = {
      { "send", "not a function", '"not a function"' },
      { "base_delay_ms", "100", '"100" (a string)' },
      { "base_delay_ms", -1, "-1" },
      { "max_delay_ms", -1, "-1" },
      { "max_delay_ms", {}, "{}" },
      { "jitter_ms", -5, "-5" },
      { "jitter_ms", true, "true" },
      { "merge_keys", "external_metadata", '"external_metadata" (not a list)' },
      { "merge_keys", { 1, 2 }, "{1, 2} (not strings)" },
      { "merge_keys", { external_metadata = true }, "{external_metadata = true} (a set, not a list)" },
      { "merge_keys", { "a", x = "b" }, '{"a", x = "b"} (a list with other keys)' },
      { "name", 42, "42 (a number)" },
      { "on_error", "print", '"print" (a string)' },
    }
    for _, case in ipairs(bad) do
      local key, value, shown = case[1], case[2], case[3]
      it(("reject %s = %s with a message naming %s"):format(key, shown, key), function()
        local opts = { send = ok_send }
        opts[key] = value
        assert.matches(key, error_of(wsup.uploader, opts), 1, true)
      end)
    end

    it("read merge_keys once: an options table whose __index changes its answer is judged by the first", function()
      -- regression: the option was looked up twice (check, then copy), and a second
      -- answer that was not a list crashed the host
      for _, second in ipairs({ 5, {}, { 1 } }) do
        local n = 0
        local opts = setmetatable({ send = ok_send }, { __index = function(_, k)
          if k == "merge_keys" then
            n = n + 1
            return n == 1 and { "labels" } or second
          end
        end })
        local up = wsup.uploader(opts)
        up:enqueue({ labels = { a = 1 } })
        up:enqueue({ labels = { b = 2 } })
        assert.same({ labels = { a = 1, b = 2 } }, up:pending())
        up:close()
      end
    end)

    it("reject an unknown option with a message naming it", function()
      local msg = error_of(wsup.uploader, { send = ok_send, base_delay = 100 })
      assert.matches("base_delay", msg, 1, true)
      msg = error_of(wsup.uploader, { send = ok_send, retries = 3 })
      assert.matches("retries", msg, 1, true)
    end)
  end)

  describe("close()", function()
    it("makes enqueue return false afterwards (true before)", function()
      local up = recorder()
      assert.is_true(up:enqueue({ worker_status = "idle" }))
      up:close()
      assert.is_false(up:enqueue({ worker_status = "busy" }))
    end)

    it("is idempotent", function()
      local up = recorder()
      up:close()
      assert.has_no.errors(function() up:close() end)
      assert.is_false(up:enqueue({ worker_status = "idle" }))
    end)

    it("drops the pending patch so it is never sent", function()
      local up, sent = recorder()
      up:enqueue({ worker_status = "idle" })
      up:close()
      assert.is_nil(up:pending())
      assert.is_false(up:stats().pending)
      wsup.run(HOUR)
      assert.equals(0, #sent)
    end)

    it("during backoff stops all further retries", function()
      local up, sent = recorder({ base_delay_ms = 100, jitter_ms = 0 }, function() return false end)
      up:enqueue({ worker_status = "idle" })
      wsup.run(50)
      assert.equals(1, #sent)
      up:close()
      wsup.run(HOUR)
      assert.equals(1, #sent)
      assert.is_false(up:stats().inflight)
    end)

    it("lets an in-flight send finish but does not retry its failure or send the pending patch", function()
      local finished = false
      local sent = {}
      local up = track(wsup.uploader({
        base_delay_ms = 10, jitter_ms = 0,
        send = function(patch)
          sent[#sent + 1] = patch
          wsup.sleep(100)
          finished = true
          return false
        end,
      }))
      up:enqueue({ worker_status = "a" })
      wsup.run(50)
      up:enqueue({ worker_status = "b" })
      up:close()
      wsup.run(HOUR)
      assert.is_true(finished)
      assert.equals(1, #sent)
      assert.same({ worker_status = "a" }, sent[1])
    end)

    it("called from inside a failing send stops retries", function()
      local up
      local calls = 0
      up = track(wsup.uploader({
        base_delay_ms = 10, jitter_ms = 0,
        send = function()
          calls = calls + 1
          up:close()
          return false
        end,
      }))
      up:enqueue({ worker_status = "a" })
      wsup.run(HOUR)
      assert.equals(1, calls)
      assert.is_false(up:enqueue({ worker_status = "b" }))
    end)

    it("happens when a <close> variable goes out of scope", function()
      local sent = {}
      local escaped
      do
        local up <close> = wsup.uploader({ send = function(p) sent[#sent + 1] = p; return true end })
        escaped = up
        up:enqueue({ worker_status = "idle" })
      end
      wsup.run(HOUR)
      assert.equals(0, #sent)
      assert.is_false(escaped:enqueue({ worker_status = "busy" }))
    end)

    -- Uploaders below are created in helper functions so that no stack slot of
    -- the test itself still refers to them when the collector runs.
    it("lets a closed uploader be garbage collected", function()
      local weak = setmetatable({}, { __mode = "v" })
      local function make_and_close()
        local up = wsup.uploader({ base_delay_ms = 10, send = function() return false end })
        weak[1] = up
        up:enqueue({ worker_status = "idle" })
        wsup.run(5)
        up:close()
      end
      make_and_close()
      wsup.run(HOUR)
      collectgarbage("collect")
      collectgarbage("collect")
      assert.is_nil(weak[1])
    end)

    it("lets an idle unreferenced uploader be garbage collected, leaving no work behind", function()
      local weak = setmetatable({}, { __mode = "v" })
      local calls = 0
      local function make_and_flush()
        local up = wsup.uploader({ send = function() calls = calls + 1; return true end })
        weak[1] = up
        up:enqueue({ worker_status = "idle" })
        assert.is_true(up:flush(HOUR))
      end
      make_and_flush()
      collectgarbage("collect")
      collectgarbage("collect")
      assert.is_nil(weak[1])
      wsup.run(HOUR)
      assert.equals(1, calls)
      -- nothing is left active: switching the clock's mode is allowed (virtual to virtual
      -- always is, so the check goes to real and back)
      assert.has_no.errors(function() wsup.clock("real") end)
      wsup.clock("virtual")
    end)
  end)

  describe("flush()", function()
    it("returns true at once when there is nothing to send", function()
      local up = recorder()
      assert.is_true(up:flush())
      assert.equals(0, wsup.now())
    end)

    it("outside a task drives the loop until delivered, jumping virtual time", function()
      local up, sent = recorder(nil, nil, 250)
      up:enqueue({ worker_status = "idle" })
      assert.is_true(up:flush())
      assert.equals(1, #sent)
      assert.equals(250, wsup.now())
      assert.is_false(up:stats().inflight)
      assert.is_false(up:stats().pending)
    end)

    it("waits for both the in-flight send and the pending patch", function()
      local up, sent = recorder(nil, nil, 100)
      up:enqueue({ worker_status = "a" })
      wsup.run(10)
      up:enqueue({ worker_status = "b" })
      assert.is_true(up:flush())
      assert.equals(2, #sent)
      assert.equals(200, wsup.now())
    end)

    it("waits through backoff until a retry succeeds", function()
      local up, sent = recorder({ base_delay_ms = 100, jitter_ms = 0 }, function(n) return n >= 3 end)
      up:enqueue({ worker_status = "a" })
      assert.is_true(up:flush())
      assert.equals(3, #sent)
      assert.equals(300, wsup.now())
    end)

    it("returns false on timeout while still undelivered, without waiting for the next retry", function()
      local up = recorder({ base_delay_ms = 100, max_delay_ms = 100000, jitter_ms = 0 }, function() return false end)
      up:enqueue({ worker_status = "a" })
      assert.is_false(up:flush(1000))
      local now = wsup.now()
      assert.is_true(now >= 1000 and now < 1500, "flush(1000) returned at " .. now)
      assert.is_true(up:stats().failures >= 4)
    end)

    it("returns false when the uploader is closed while flush waits outside a task", function()
      local up = recorder({ base_delay_ms = 100, jitter_ms = 0 }, function() return false end)
      up:enqueue({ worker_status = "a" })
      keep(wsup.after(450, function() up:close() end))
      assert.is_false(up:flush())
      local now = wsup.now()
      assert.is_true(now >= 450 and now < 700, "flush returned at " .. now)
    end)

    it("inside a task yields while other tasks run, and returns true when delivered", function()
      local up = recorder(nil, nil, 300)
      local ticks, result, at = 0, nil, nil
      local h = wsup.every(10, function() ticks = ticks + 1 end)
      keep(h)
      wsup.spawn(function()
        up:enqueue({ worker_status = "a" })
        result = up:flush()
        at = wsup.now()
        h:stop()
      end)
      wsup.run(HOUR)
      assert.is_true(result)
      assert.equals(300, at)
      assert.is_true(ticks >= 29, "only " .. ticks .. " ticks while flush waited")
    end)

    it("inside a task returns false when the uploader is closed while it waits", function()
      local up = recorder({ base_delay_ms = 100, jitter_ms = 0 }, function() return false end)
      local result, at
      wsup.spawn(function()
        up:enqueue({ worker_status = "a" })
        result = up:flush()
        at = wsup.now()
      end)
      keep(wsup.after(450, function() up:close() end))
      wsup.run(HOUR)
      assert.is_false(result)
      assert.is_true(at >= 450 and at < 700, "flush returned at " .. tostring(at))
    end)

    it("inside a task returns false on timeout", function()
      local up = recorder({ base_delay_ms = 100, max_delay_ms = 100000, jitter_ms = 0 }, function() return false end)
      local result, at
      wsup.spawn(function()
        up:enqueue({ worker_status = "a" })
        result = up:flush(1000)
        at = wsup.now()
      end)
      wsup.run(5000)
      assert.is_false(result)
      assert.is_true(at >= 1000 and at < 1500, "flush(1000) returned at " .. tostring(at))
    end)
  end)

  describe("stats()", function()
    it("starts at zero", function()
      local up = recorder()
      local s = up:stats()
      for _, k in ipairs({ "enqueued", "coalesced", "attempts", "delivered", "failures", "dropped",
        "consecutive_failures" }) do
        assert.equals(0, s[k], k)
      end
      assert.is_false(s.inflight)
      assert.is_false(s.pending)
      assert.is_nil(s.last_error)
    end)

    it("keeps last_error to one line of at most 255 bytes, cut between UTF-8 characters", function()
      for _, msg in ipairs({ ("x"):rep(254) .. "\u{E9} and more", ("x"):rep(253) .. "\u{1F600}!",
                             "first line\nsecond line" }) do
        local up = wsup.uploader { send = function() error(msg, 0) end, on_error = function() end,
                                   base_delay_ms = 1000, jitter_ms = 0 }
        up:enqueue({ worker_status = "a" })
        wsup.run(10)
        local e = up:stats().last_error
        assert.is_truthy(utf8.len(e), "not valid UTF-8: " .. e:sub(-4))
        assert.is_true(#e <= 255)
        assert.is_nil(e:find("\n"))
        assert.equals(1, (msg:find(e, 1, true)))
        up:close()
      end
    end)

    it("reports pending and inflight as the patch moves through", function()
      local up = recorder(nil, nil, 100)
      up:enqueue({ worker_status = "a" })
      local s = up:stats()
      assert.is_true(s.pending)
      assert.is_false(s.inflight)
      wsup.run(10)
      s = up:stats()
      assert.is_false(s.pending)
      assert.is_true(s.inflight)
      up:enqueue({ worker_status = "b" })
      s = up:stats()
      assert.is_true(s.pending)
      assert.is_true(s.inflight)
      up:flush(HOUR)
      s = up:stats()
      assert.is_false(s.pending)
      assert.is_false(s.inflight)
    end)

    it("reports inflight = true from inside send", function()
      local seen
      local up
      up = track(wsup.uploader({ send = function() seen = up:stats().inflight; return true end }))
      up:enqueue({ worker_status = "a" })
      up:flush(HOUR)
      assert.is_true(seen)
    end)

    it("counts enqueues, attempts, failures and deliveries", function()
      local up = recorder({ base_delay_ms = 100, jitter_ms = 0 }, function(n) return n >= 4 end)
      up:enqueue({ worker_status = "a" })
      up:enqueue({ worker_status = "b" })
      wsup.run(350) -- attempts at 0, 100, 300 have failed; next at 700
      local s = up:stats()
      assert.equals(2, s.enqueued)
      assert.equals(1, s.coalesced)
      assert.equals(3, s.attempts)
      assert.equals(3, s.failures)
      assert.equals(3, s.consecutive_failures)
      assert.equals(0, s.delivered)
      assert.is_false(s.pending)
      assert.is_false(s.inflight) -- waiting in backoff is not a send in flight
      up:flush(HOUR)
      s = up:stats()
      assert.equals(4, s.attempts)
      assert.equals(3, s.failures)
      assert.equals(0, s.consecutive_failures)
      assert.equals(1, s.delivered)
      assert.equals(0, s.dropped)
    end)

    it("does not count enqueues refused after close", function()
      local up = recorder()
      up:enqueue({ worker_status = "a" })
      up:close()
      up:enqueue({ worker_status = "b" })
      assert.equals(1, up:stats().enqueued)
    end)

    it("returns a snapshot that later activity does not change", function()
      local up = recorder()
      local before = up:stats()
      up:enqueue({ worker_status = "a" })
      up:flush(HOUR)
      assert.equals(0, before.enqueued)
      assert.equals(0, before.delivered)
      assert.equals(1, up:stats().delivered)
    end)
  end)
end)
