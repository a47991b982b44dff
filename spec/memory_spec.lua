-- Memory stays flat: 10^6 enqueues into an uploader whose every send fails
-- (alternately returning false and raising), in virtual time.
local wsup = require "wsup"

-- Bound for loop runs in virtual time, so that a broken implementation fails instead of hanging.
local HOUR = 3600 * 1000

local function rss_kib()
  local f = assert(io.open("/proc/self/status", "r"))
  local text = f:read("a")
  f:close()
  return assert(tonumber(text:match("VmRSS:%s*(%d+)%s*kB")), "no VmRSS in /proc/self/status")
end

local function settle()
  collectgarbage("collect")
  collectgarbage("collect")
end

describe("memory", function()
  local up

  before_each(function()
    wsup.clock("virtual")
  end)

  after_each(function()
    if up then up:close() end
    up = nil
    wsup.run(HOUR)
  end)

  it("stays flat over 10^6 enqueues while every send fails (Lua heap and RSS)", function()
    local calls, errors, bad_args = 0, 0, 0
    up = wsup.uploader({
      base_delay_ms = 1, max_delay_ms = 4, jitter_ms = 2,
      on_error = function() errors = errors + 1 end,
      send = function(patch, json)
        calls = calls + 1
        if type(patch) ~= "table" or type(json) ~= "string" or #json == 0 then bad_args = bad_args + 1 end
        if calls % 2 == 0 then error("send failed #" .. calls) end
        return false
      end,
    })

    local N, STEP = 1000000, 100
    local lua_kib, rss = {}, {}
    for i = 1, N do
      up:enqueue({
        worker_status = (i % 3 == 0) and "busy" or "idle",
        external_metadata = { ["key" .. (i % 64)] = i, note = "n" .. (i % 7) },
        internal_metadata = { seq = i },
      })
      if i % STEP == 0 then wsup.run(20) end
      if i == N / 10 or i == N then
        settle()
        lua_kib[#lua_kib + 1] = collectgarbage("count")
        rss[#rss + 1] = rss_kib()
      end
    end

    local s = up:stats()
    assert.equals(N, s.enqueued)
    assert.equals(0, s.delivered)
    assert.is_true(s.attempts > 10000, "only " .. s.attempts .. " attempts were made")
    assert.equals(s.attempts, calls)
    assert.equals(0, bad_args)
    assert.is_true(s.failures >= s.attempts - 1)
    assert.is_true(errors >= s.attempts // 2 - 1)
    assert.is_true(s.consecutive_failures > 10000)

    local lua_growth = lua_kib[2] - lua_kib[1]
    local rss_growth = rss[2] - rss[1]
    assert.is_true(lua_growth < 1024,
      ("Lua heap grew %.0f KiB (%.0f -> %.0f) between 10^5 and 10^6 enqueues")
        :format(lua_growth, lua_kib[1], lua_kib[2]))
    assert.is_true(rss_growth < 4096,
      ("RSS grew %d KiB (%d -> %d) between 10^5 and 10^6 enqueues"):format(rss_growth, rss[1], rss[2]))
  end)
end)
