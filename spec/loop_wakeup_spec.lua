-- The loop must not sleep on work it has just been given. libuv runs due timers at the
-- start of uv_run(UV_RUN_ONCE), before it polls; when such a timer's callback (libcurl's)
-- finishes a transfer and queues the waiting task's wake-up, the poll that follows must
-- not block until some unrelated deadline. Real clock, 127.0.0.1 only.
local wsup = require "wsup"

describe("loop wake-ups", function()
  before_each(function()
    wsup.clock("real")
  end)

  it("a task resumes as soon as its HTTP request fails in libcurl's timer, not at the next unrelated timer", function()
    for _ = 1, 3 do
      local elapsed
      local unrelated = wsup.after(1500, function() end)
      wsup.spawn(function()
        local t0 = wsup.now()
        -- Let the loop's cached time go stale by a few ms, so libcurl's 1 ms timer is
        -- already due when uv_run starts and fires before the poll.
        local c = os.clock()
        while os.clock() - c < 0.005 do end
        local res, _, code = wsup.http.request { url = "http://127.0.0.1:99999/" } -- fails at once
        assert(res == nil and code == "transport")
        elapsed = wsup.now() - t0
        unrelated:stop()
      end)
      wsup.run(3000)
      assert.truthy(elapsed, "the request never returned")
      assert.is_true(elapsed < 500, "the task waited " .. elapsed .. " ms for an unrelated timer")
    end
  end)
end)

describe("loop fairness", function()
  before_each(function()
    wsup.clock("real")
  end)

  it("polls I/O while a task keeps timers always due (wsup.sleep(0) in a loop)", function()
    local rcv = assert(wsup.receiver { port = 0 })
    local spins, answered_at, starved = 0, nil, false
    wsup.spawn(function()
      local res = wsup.http.request { url = rcv.url .. "/worker/f" }
      answered_at = spins
      assert(res and res.status == 200)
    end)
    wsup.spawn(function()
      local t0 = wsup.now()
      while not answered_at do
        if wsup.now() - t0 > 1000 then starved = true; break end
        spins = spins + 1
        wsup.sleep(0)
      end
    end)
    wsup.run(3000)
    rcv:close()
    assert.is_false(starved, "the request was starved by a busy task")
    assert.truthy(answered_at)
  end)

  it("a due timer fires while tasks keep the loop busy with next-turn work (enqueue and flush in a loop)", function()
    local fired_after, t0 = nil, wsup.now()
    local up = wsup.uploader { send = function() return true end }
    local timer = wsup.after(50, function() fired_after = wsup.now() - t0 end)
    local rounds = 0
    wsup.spawn(function()
      while not fired_after and wsup.now() - t0 < 3000 do
        up:enqueue { round = rounds }
        up:flush()
        rounds = rounds + 1
      end
    end)
    wsup.run(5000)
    timer:stop()
    up:close()
    assert.truthy(fired_after, "the timer never fired")
    assert.is_true(fired_after < 1000, ("the 50 ms timer fired after %d ms (%d rounds)"):format(fired_after, rounds))
  end)
end)
