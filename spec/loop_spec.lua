-- The event loop API: clock, now, after, every, spawn, sleep, run.
local wsup = require "wsup"
local harness = require "support.harness"

describe("loop", function()
  local H = harness.new()
  local track, keep = H.track, H.keep

  before_each(H.before)
  after_each(H.after)

  describe("clock", function()
    it("reports the current mode", function()
      assert.equals("virtual", wsup.clock())
    end)

    it("starts virtual time at 0 and resets it on every switch to virtual", function()
      assert.equals(0, wsup.now())
      wsup.sleep(500)
      assert.equals(500, wsup.now())
      wsup.clock("virtual")
      assert.equals(0, wsup.now())
    end)

    -- A mode change is refused while anything is active. clock("virtual") while
    -- already virtual is always allowed: time restarts at 0, deadlines keep their distance.
    it("refuses to switch to real while a timer is active; allows it after stop", function()
      local h = keep(wsup.after(100, function() end))
      assert.has_error(function() wsup.clock("real") end)
      h:stop()
      assert.has_no.errors(function() wsup.clock("real") end)
      wsup.clock("virtual")
    end)

    it("refuses to switch to real while a task sleeps; allows it once it finished", function()
      wsup.spawn(function() wsup.sleep(100) end)
      wsup.run(10)
      assert.has_error(function() wsup.clock("real") end)
      wsup.run()
      assert.has_no.errors(function() wsup.clock("real") end)
      wsup.clock("virtual")
    end)

    it("refuses to switch to real while an uploader waits in backoff", function()
      local up = wsup.uploader({ base_delay_ms = 100, send = function() return false end })
      track(up)
      up:enqueue({ worker_status = "idle" })
      wsup.run(10)
      assert.has_error(function() wsup.clock("real") end)
      up:close()
      wsup.run()
      assert.has_no.errors(function() wsup.clock("real") end)
      wsup.clock("virtual")
    end)

    it("restarts virtual time at 0 while work is pending, keeping each deadline's distance", function()
      local fired_at
      wsup.sleep(300)
      keep(wsup.after(200, function() fired_at = wsup.now() end))
      wsup.sleep(50) -- the timer is now 150 ms away
      assert.has_no.errors(function() wsup.clock("virtual") end)
      assert.equals(0, wsup.now())
      wsup.run()
      assert.equals(150, fired_at)
    end)

    it("restarted from inside a timer or task, keeps the other deadlines' distance (none fires early)", function()
      local b_at, woke_at
      keep(wsup.after(1000, function() wsup.clock("virtual") end))
      keep(wsup.after(1500, function() b_at = wsup.now() end))
      wsup.spawn(function() wsup.sleep(1400); woke_at = wsup.now() end)
      wsup.run()
      assert.equals(500, b_at)
      assert.equals(400, woke_at)
    end)

    it("restarted inside run(ms), moves run's end along with it", function()
      local after_reset
      keep(wsup.after(300, function() wsup.clock("virtual") end))
      keep(wsup.every(100, function() after_reset = wsup.now() end))
      wsup.run(1050) -- 300 ms before the restart, so 750 after it
      assert.equals(750, wsup.now())
      assert.equals(700, after_reset)
    end)

    it("rejects an unknown mode", function()
      assert.has_error(function() wsup.clock("fast") end)
      assert.equals("virtual", wsup.clock())
    end)

    it("can switch to real, where now() is an integer that does not go backwards", function()
      wsup.clock("real")
      assert.equals("real", wsup.clock())
      local a = wsup.now()
      local b = wsup.now()
      assert.equals("integer", math.type(a))
      assert.is_true(b >= a)
      wsup.clock("virtual")
      assert.equals("virtual", wsup.clock())
    end)
  end)

  describe("now", function()
    it("is an integer number of ms", function()
      wsup.sleep(7)
      assert.equals("integer", math.type(wsup.now()))
      assert.equals(7, wsup.now())
    end)
  end)

  describe("after", function()
    it("runs fn once at its deadline, as virtual time jumps there", function()
      local fired = {}
      keep(wsup.after(300, function() fired[#fired + 1] = wsup.now() end))
      wsup.run()
      assert.same({ 300 }, fired)
      assert.equals(300, wsup.now())
    end)

    it("fires timers in deadline order", function()
      local order = {}
      keep(wsup.after(300, function() order[#order + 1] = "c@" .. wsup.now() end))
      keep(wsup.after(100, function() order[#order + 1] = "a@" .. wsup.now() end))
      keep(wsup.after(200, function() order[#order + 1] = "b@" .. wsup.now() end))
      wsup.run()
      assert.same({ "a@100", "b@200", "c@300" }, order)
    end)

    it("does not run fn after stop(), and a stopped timer is no work for run()", function()
      local fired = false
      local h = keep(wsup.after(1000, function() fired = true end))
      h:stop()
      wsup.run()
      assert.is_false(fired)
      assert.is_true(wsup.now() < 1000)
    end)

    it("runs fn as a task that may sleep", function()
      local at
      keep(wsup.after(100, function()
        wsup.sleep(50)
        at = wsup.now()
      end))
      wsup.run()
      assert.equals(150, at)
    end)

    it("jumps over long delays instantly in virtual time", function()
      local fired
      keep(wsup.after(10000000, function() fired = wsup.now() end))
      wsup.run()
      assert.equals(10000000, fired)
    end)
  end)

  describe("every", function()
    it("runs fn at each period", function()
      local at = {}
      keep(wsup.every(100, function() at[#at + 1] = wsup.now() end))
      wsup.run(350)
      assert.same({ 100, 200, 300 }, at)
    end)

    it("stops when fn calls stop(), after which run() returns", function()
      local at = {}
      local h
      h = keep(wsup.every(100, function()
        at[#at + 1] = wsup.now()
        if #at == 3 then h:stop() end
      end))
      wsup.run()
      assert.same({ 100, 200, 300 }, at)
      assert.equals(300, wsup.now())
    end)
  end)

  describe("spawn", function()
    it("runs fn as a task with the given arguments", function()
      local got
      wsup.spawn(function(...) got = table.pack(...) end, 1, "two", true)
      wsup.run()
      assert.same({ n = 3, 1, "two", true }, got)
    end)

    it("lets tasks sleep and interleave by wake-up time", function()
      local log = {}
      wsup.spawn(function()
        wsup.sleep(100)
        log[#log + 1] = "slow@" .. wsup.now()
      end)
      wsup.spawn(function()
        wsup.sleep(30)
        log[#log + 1] = "fast@" .. wsup.now()
        wsup.sleep(100)
        log[#log + 1] = "fast2@" .. wsup.now()
      end)
      wsup.run()
      assert.same({ "fast@30", "slow@100", "fast2@130" }, log)
    end)
  end)

  describe("sleep", function()
    it("inside a task yields for ms of loop time", function()
      local t0, t1
      wsup.spawn(function()
        t0 = wsup.now()
        wsup.sleep(250)
        t1 = wsup.now()
      end)
      wsup.run()
      assert.equals(250, t1 - t0)
    end)

    it("with 0 ms inside a task yields and resumes without time passing", function()
      local log = {}
      wsup.spawn(function()
        log[#log + 1] = "a1"
        wsup.sleep(0)
        log[#log + 1] = "a2@" .. wsup.now()
      end)
      wsup.spawn(function()
        log[#log + 1] = "b1"
      end)
      wsup.run()
      assert.same({ "a1", "b1", "a2@0" }, log)
    end)

    it("outside a task runs the loop for exactly ms, firing timers due meanwhile", function()
      local fired
      keep(wsup.after(50, function() fired = wsup.now() end))
      wsup.sleep(100)
      assert.equals(50, fired)
      assert.equals(100, wsup.now())
    end)
  end)

  describe("run", function()
    it("returns at once without advancing time when there is no work", function()
      wsup.run()
      assert.equals(0, wsup.now())
    end)

    it("with ms stops after ms of loop time even if timers remain", function()
      local ticks = 0
      keep(wsup.every(100, function() ticks = ticks + 1 end))
      wsup.run(1050)
      assert.equals(10, ticks)
      wsup.run(1020) -- ends past 2000 whether run(1050) left now() at 1000 or 1050
      assert.equals(20, ticks)
    end)

    it("with ms, jumps to its end when only a producer is active (no timer to jump to)", function()
      local sig = keep(wsup.signal("usr2", function() end))
      assert.is_true(wsup.run(100))
      assert.equals(100, wsup.now())
      assert.is_true(wsup.run(50))
      assert.equals(150, wsup.now())
      sig:stop()
    end)

    it("waits for a sleeping task", function()
      local done = false
      wsup.spawn(function()
        wsup.sleep(1000)
        done = true
      end)
      wsup.run()
      assert.is_true(done)
      assert.equals(1000, wsup.now())
    end)

    it("waits for an uploader through its backoff until delivered", function()
      local attempts = 0
      local up = wsup.uploader({
        base_delay_ms = 100, jitter_ms = 0,
        send = function()
          attempts = attempts + 1
          return attempts >= 3
        end,
      })
      track(up)
      up:enqueue({ worker_status = "idle" })
      wsup.run()
      assert.equals(3, attempts)
      assert.equals(300, wsup.now())
      assert.equals(1, up:stats().delivered)
    end)

    it("keeps other tasks running while a send sleeps", function()
      local ticks = 0
      keep(wsup.every(10, function() ticks = ticks + 1 end))
      local done_at
      local up = wsup.uploader({
        send = function()
          wsup.sleep(100)
          done_at = wsup.now()
          return true
        end,
      })
      track(up)
      up:enqueue({ worker_status = "idle" })
      wsup.run(105)
      assert.equals(100, done_at)
      assert.equals(10, ticks)
    end)

    it("lets two uploaders send at the same time", function()
      local finished = {}
      local function slow(name)
        local up = wsup.uploader({
          send = function()
            wsup.sleep(100)
            finished[#finished + 1] = name .. "@" .. wsup.now()
            return true
          end,
        })
        track(up)
        return up
      end
      local a, b = slow("a"), slow("b")
      a:enqueue({ worker_status = "x" })
      b:enqueue({ worker_status = "y" })
      wsup.run()
      table.sort(finished)
      assert.same({ "a@100", "b@100" }, finished)
    end)
  end)
end)
