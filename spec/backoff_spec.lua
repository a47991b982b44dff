-- Failure handling: the retry schedule, jitter, retry-after hints, errors raised
-- in send, "drop", and absorbing pending patches into a retry.
local wsup = require "wsup"
local harness = require "support.harness"

local HOUR = harness.HOUR

describe("retry", function()
  local H = harness.new()
  local track = H.track

  -- scripted(opts, reply): an uploader whose send records (patch, time) and answers with
  -- reply(n, patch) (n = attempt number, from 1). Extra results are passed through.
  local scripted = H.recorder

  local function times(sent)
    local t = {}
    for i, s in ipairs(sent) do t[i] = s.t end
    return t
  end

  local function always_fail() return false end

  before_each(H.before)
  after_each(H.after)

  describe("schedule", function()
    it("doubles from base_delay_ms and caps at max_delay_ms (attempts at 0,100,300,700,1500,2500)", function()
      local up, sent = scripted({ base_delay_ms = 100, max_delay_ms = 1000, jitter_ms = 0 }, always_fail)
      up:enqueue({ worker_status = "idle" })
      wsup.run(2600)
      assert.same({ 0, 100, 300, 700, 1500, 2500 }, times(sent))
    end)

    it("reports next_attempt_at as loop time: now when queued, the retry's in backoff, kept across a clock reset",
      function()
      local up, sent = scripted({ base_delay_ms = 1000, jitter_ms = 0 }, always_fail)
      wsup.sleep(5000)
      up:enqueue({ worker_status = "idle" })
      assert.equals(wsup.now(), up:stats().next_attempt_at) -- queued: due on the next turn
      wsup.sleep(10)
      assert.same({ 5000 }, times(sent))
      assert.equals(6000, up:stats().next_attempt_at)
      wsup.clock("virtual") -- time restarts at 0; the retry keeps its distance (990 ms)
      assert.equals(0, wsup.now())
      assert.equals(990, up:stats().next_attempt_at)
      wsup.sleep(990)
      assert.equals(2, #sent)
      assert.equals(990, sent[2].t)
      assert.equals(990 + 2000, up:stats().next_attempt_at)
      up:close()
      assert.is_nil(up:stats().next_attempt_at)
    end)

    it("defaults to base 500 ms and max 30000 ms", function()
      local up, sent = scripted({ jitter_ms = 0 }, always_fail)
      up:enqueue({ worker_status = "idle" })
      wsup.run(62000)
      assert.same({ 0, 500, 1500, 3500, 7500, 15500, 31500, 61500 }, times(sent))
    end)

    it("measures the delay from the end of the failed send", function()
      local sent = {}
      local up = wsup.uploader({
        base_delay_ms = 100, jitter_ms = 0,
        send = function()
          sent[#sent + 1] = { t = wsup.now() }
          wsup.sleep(50)
          return #sent >= 3
        end,
      })
      track(up)
      up:enqueue({ worker_status = "idle" })
      wsup.run(HOUR)
      -- fails at 50 -> retry at 150; fails at 200 -> retry at 200 + 200 = 400
      assert.same({ 0, 150, 400 }, times(sent))
    end)

    it("keeps retrying until a send succeeds, then stops", function()
      local up, sent = scripted({ base_delay_ms = 1, max_delay_ms = 8, jitter_ms = 0 },
        function(n) return n > 40 end)
      up:enqueue({ worker_status = "idle" })
      wsup.run(HOUR)
      assert.equals(41, #sent)
      local s = up:stats()
      assert.equals(41, s.attempts)
      assert.equals(40, s.failures)
      assert.equals(1, s.delivered)
      assert.equals(0, s.consecutive_failures)
    end)

    it("restarts from base_delay_ms for the next patch after a success", function()
      -- attempts 1-2 fail, 3 succeeds; the next patch's attempt 4 fails, 5 succeeds
      local up, sent = scripted({ base_delay_ms = 100, max_delay_ms = 10000, jitter_ms = 0 },
        function(n) return n == 3 or n == 5 end)
      up:enqueue({ worker_status = "a" })
      wsup.run(HOUR)
      assert.same({ 0, 100, 300 }, times(sent))
      wsup.sleep(1000) -- now at 1300
      up:enqueue({ worker_status = "b" })
      wsup.run(HOUR)
      assert.same({ 0, 100, 300, 1300, 1400 }, times(sent))
    end)
  end)

  describe("jitter", function()
    local function delays(seed, opts, attempts)
      wsup.clock("virtual")
      wsup.randomseed(seed)
      local up, sent = scripted(opts, always_fail)
      up:enqueue({ worker_status = "idle" })
      for _ = 1, attempts do
        if #sent >= attempts then break end
        wsup.run(20000) -- longer than any delay used below
      end
      assert.is_true(#sent >= attempts, "only " .. #sent .. " attempts were made")
      up:close()
      wsup.run(HOUR)
      local d = {}
      for i = 2, attempts do d[#d + 1] = sent[i].t - sent[i - 1].t end
      return d
    end

    it("adds between 0 and jitter_ms to every delay, and not always 0", function()
      local d = delays(7, { base_delay_ms = 100, max_delay_ms = 100, jitter_ms = 1000 }, 30)
      local above = 0
      for _, x in ipairs(d) do
        assert.is_true(x >= 100 and x <= 1100, "delay out of [100, 1100]: " .. x)
        if x > 100 then above = above + 1 end
      end
      assert.is_true(above >= 20, "jitter added to only " .. above .. " of 29 delays")
    end)

    it("defaults to jitter_ms 500", function()
      local d = delays(11, { base_delay_ms = 100, max_delay_ms = 100 }, 30)
      local top = 0
      for _, x in ipairs(d) do
        assert.is_true(x >= 100 and x <= 600, "delay out of [100, 600]: " .. x)
        if x > top then top = x end
      end
      assert.is_true(top > 350, "largest of 29 delays with 500 ms jitter was only " .. top)
    end)

    it("is reproducible with wsup.randomseed and differs between seeds", function()
      local opts = function() return { base_delay_ms = 10, max_delay_ms = 10, jitter_ms = 10000 } end
      local a = delays(42, opts(), 12)
      local b = delays(42, opts(), 12)
      local c = delays(43, opts(), 12)
      assert.same(a, b)
      assert.are_not.same(a, c)
    end)
  end)

  describe("retry-after hint", function()
    it("makes the next attempt wait at least the hinted ms after false", function()
      local up, sent = scripted({ base_delay_ms = 100, jitter_ms = 0 },
        function(n) if n == 1 then return false, 2000 end return true end)
      up:enqueue({ worker_status = "idle" })
      wsup.run(HOUR)
      assert.equals(2, #sent)
      assert.is_true(sent[2].t >= 2000, "retried at " .. sent[2].t)
    end)

    it("works after nil as well", function()
      local up, sent = scripted({ base_delay_ms = 100, jitter_ms = 0 },
        function(n) if n == 1 then return nil, 2000 end return true end)
      up:enqueue({ worker_status = "idle" })
      wsup.run(HOUR)
      assert.equals(2, #sent)
      assert.is_true(sent[2].t >= 2000, "retried at " .. sent[2].t)
    end)

    it("is honoured even above max_delay_ms", function()
      local up, sent = scripted({ base_delay_ms = 100, max_delay_ms = 1000, jitter_ms = 0 },
        function(n) if n == 1 then return false, 5000 end return true end)
      up:enqueue({ worker_status = "idle" })
      wsup.run(HOUR)
      assert.is_true(sent[2].t >= 5000, "retried at " .. sent[2].t)
    end)

    it("does not shorten the backoff when it is smaller", function()
      local up, sent = scripted({ base_delay_ms = 500, jitter_ms = 0 },
        function(n) if n == 1 then return false, 1 end return true end)
      up:enqueue({ worker_status = "idle" })
      wsup.run(HOUR)
      assert.equals(500, sent[2].t)
    end)
  end)

  describe("an error raised in send", function()
    it("is reported to on_error, counted as a failure, and retried with backoff", function()
      local errors = {}
      local up, sent = scripted({
        base_delay_ms = 100, jitter_ms = 0,
        on_error = function(err) errors[#errors + 1] = tostring(err) end,
      }, function(n)
        if n <= 2 then error("boom " .. n) end
        return true
      end)
      up:enqueue({ worker_status = "idle" })
      wsup.run(HOUR)
      assert.same({ 0, 100, 300 }, times(sent))
      assert.equals(2, #errors)
      assert.matches("boom 1", errors[1], 1, true)
      assert.matches("boom 2", errors[2], 1, true)
      local s = up:stats()
      assert.equals(2, s.failures)
      assert.equals(1, s.delivered)
      assert.equals("string", type(s.last_error))
      assert.matches("boom 2", s.last_error, 1, true)
    end)

    it("is handled the same when raised after the send has slept", function()
      local errors, calls = {}, 0
      local up = wsup.uploader({
        base_delay_ms = 100, jitter_ms = 0,
        on_error = function(err) errors[#errors + 1] = tostring(err) end,
        send = function()
          calls = calls + 1
          wsup.sleep(50)
          if calls == 1 then error("late boom") end
          return true
        end,
      })
      track(up)
      up:enqueue({ worker_status = "idle" })
      wsup.run(HOUR)
      assert.equals(2, calls)
      assert.equals(1, #errors)
      assert.matches("late boom", errors[1], 1, true)
      assert.equals(1, up:stats().delivered)
      assert.equals(200, wsup.now()) -- 50 (fail) + 100 backoff + 50 (success)
    end)

    it("with a non-string error value is still retried and leaves a string last_error", function()
      local got
      local up, sent = scripted({
        base_delay_ms = 10, jitter_ms = 0,
        on_error = function(err) got = err end,
      }, function(n)
        if n == 1 then error({ code = 503 }) end
        return true
      end)
      up:enqueue({ worker_status = "idle" })
      wsup.run(HOUR)
      assert.equals(2, #sent)
      assert.is_not_nil(got)
      assert.equals("string", type(up:stats().last_error))
    end)

    it("goes to stderr with a traceback when no on_error is given", function()
      local script = os.tmpname()
      local errfile = os.tmpname()
      local f = assert(io.open(script, "w"))
      f:write([[
local wsup = require "wsup"
wsup.clock("virtual")
local n = 0
local up = wsup.uploader({ base_delay_ms = 1, jitter_ms = 0, send = function()
  n = n + 1
  if n == 1 then error("kaboom-default-handler") end
  return true
end })
up:enqueue({ worker_status = "idle" })
io.write(tostring(up:flush(10000)), " ", n)
]])
      f:close()
      local cmd = ("LUA_PATH=%q LUA_CPATH=%q lua5.4 %q 2>%q"):format(package.path, package.cpath, script, errfile)
      local p = assert(io.popen(cmd, "r"))
      local out = p:read("a")
      p:close()
      local ef = assert(io.open(errfile, "r"))
      local err = ef:read("a")
      ef:close()
      os.remove(script)
      os.remove(errfile)
      assert.equals("true 2", out)
      assert.matches("kaboom-default-handler", err, 1, true)
      assert.matches("traceback", err, 1, true)
    end)

    it("does not stop other tasks or uploaders", function()
      local ticks = 0
      local errs = 0
      local bad = wsup.uploader({
        base_delay_ms = 10, jitter_ms = 0,
        on_error = function() errs = errs + 1 end,
        send = function() error("always") end,
      })
      track(bad)
      local good, sent = scripted({}, function() return true end)
      bad:enqueue({ worker_status = "x" })
      local h = wsup.every(100, function() ticks = ticks + 1 end)
      wsup.run(50)
      good:enqueue({ worker_status = "y" })
      wsup.run(1000)
      h:stop()
      assert.is_true(errs >= 5)
      assert.equals(10, ticks)
      assert.equals(1, #sent)
      assert.is_true(bad:enqueue({ worker_status = "z" }))
    end)
  end)

  describe("\"drop\"", function()
    it("discards the patch without retrying and counts it as dropped", function()
      local up, sent = scripted({ base_delay_ms = 10, jitter_ms = 0 }, function() return "drop" end)
      up:enqueue({ worker_status = "idle" })
      wsup.run(HOUR)
      assert.equals(1, #sent)
      local s = up:stats()
      assert.equals(1, s.attempts)
      assert.equals(1, s.dropped)
      assert.equals(0, s.delivered)
      assert.is_false(s.pending)
      assert.is_false(s.inflight)
    end)

    it("still lets a patch enqueued meanwhile go out next", function()
      local sent = {}
      local up = wsup.uploader({
        send = function(patch)
          sent[#sent + 1] = patch
          wsup.sleep(100)
          if #sent == 1 then return "drop" end
          return true
        end,
      })
      track(up)
      up:enqueue({ worker_status = "a" })
      wsup.run(10)
      up:enqueue({ worker_status = "b" })
      wsup.run(HOUR)
      assert.equals(2, #sent)
      assert.same({ worker_status = "b" }, sent[2])
      assert.equals(1, up:stats().delivered)
      assert.equals(1, up:stats().dropped)
    end)
  end)

  describe("absorbing", function()
    it("merges patches enqueued during the backoff into the retried payload", function()
      local up, sent = scripted({ base_delay_ms = 100, jitter_ms = 0 }, function(n) return n > 1 end)
      up:enqueue({ worker_status = "a", external_metadata = { x = 1 }, keep = true })
      wsup.run(50) -- attempt 1 failed at 0; waiting until 100
      up:enqueue({ external_metadata = { y = 2 } })
      up:enqueue({ worker_status = "c", external_metadata = { x = wsup.null } })
      wsup.run(HOUR)
      assert.equals(2, #sent)
      assert.equals(100, sent[2].t)
      assert.same({ worker_status = "c", external_metadata = { x = wsup.null, y = 2 }, keep = true }, sent[2].patch)
      assert.is_nil(up:pending())
    end)

    it("merges patches enqueued while the failing send was in flight", function()
      local sent = {}
      local up = wsup.uploader({
        base_delay_ms = 100, jitter_ms = 0,
        send = function(patch)
          sent[#sent + 1] = patch
          wsup.sleep(50)
          return #sent > 1
        end,
      })
      track(up)
      up:enqueue({ worker_status = "a", internal_metadata = { i = 1 } })
      wsup.run(10)
      up:enqueue({ worker_status = "b", internal_metadata = { j = 2 } })
      wsup.run(HOUR)
      assert.equals(2, #sent)
      assert.same({ worker_status = "b", internal_metadata = { i = 1, j = 2 } }, sent[2])
    end)

    it("gives every attempt a fresh table, so send mutating it does not leak into the retry", function()
      local up, sent = scripted({ base_delay_ms = 10, jitter_ms = 0 }, function(n, patch)
        if n == 1 then
          patch.worker_status = "mutated"
          patch.external_metadata.z = 1
          return false
        end
        return true
      end)
      up:enqueue({ worker_status = "a", external_metadata = { x = 1 } })
      wsup.run(HOUR)
      assert.equals(2, #sent)
      assert.are_not.equal(sent[1].patch, sent[2].patch)
      assert.same({ worker_status = "a", external_metadata = { x = 1 } }, sent[2].patch)
    end)
  end)
end)
