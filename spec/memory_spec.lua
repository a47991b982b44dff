-- Memory stays flat: 10^6 enqueues into an uploader whose every send fails
-- (alternately returning false and raising), in virtual time.
local wsup = require "wsup"
local harness = require "support.harness"

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
  local H = harness.new()

  before_each(H.before)
  after_each(H.after)

  it("stays flat over 10^6 enqueues while every send fails (Lua heap and RSS)", function()
    local calls, errors, bad_args = 0, 0, 0
    local up = H.track(wsup.uploader({
      base_delay_ms = 1, max_delay_ms = 4, jitter_ms = 2,
      on_error = function() errors = errors + 1 end,
      send = function(patch, json)
        calls = calls + 1
        if type(patch) ~= "table" or type(json) ~= "string" or #json == 0 then bad_args = bad_args + 1 end
        if calls % 2 == 0 then error("send failed #" .. calls) end
        return false
      end,
    }))

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
    -- 8 MiB over 9 * 10^5 enqueues is under 10 bytes each: any per-enqueue leak (the
    -- smallest allocation is 16 bytes) fails; allocator noise under load does not.
    assert.is_true(rss_growth < 8192,
      ("RSS grew %d KiB (%d -> %d) between 10^5 and 10^6 enqueues"):format(rss_growth, rss[1], rss[2]))
  end)
end)
