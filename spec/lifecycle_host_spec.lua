-- The host's lifecycle, from outside: build/wsup runs a script, drains its uploaders
-- within --drain-ms (or wsup.drain_ms) when the script is done or on SIGINT/SIGTERM,
-- exits at once on a second signal, and says which uploaders kept state undelivered.
-- Exit status: 0 all delivered, 1 uncaught script error, 2 usage error, 3 undelivered.
-- Sends here are Lua policies (no network); signals and the clock are real.
local cli = require "support.cli"

local WSUP = cli.WSUP

-- A script prelude: an uploader named NAME whose send sleeps HOLD ms, then returns
-- true from attempt OK_FROM on (false before). Every attempt is written to stdout.
local function uploader_src(name, hold, ok_from, base)
  return ([[
local wsup = require "wsup"
local attempts = 0
local up = wsup.uploader { name = %q, base_delay_ms = %d, max_delay_ms = %d, jitter_ms = 0,
  send = function(_, json)
    attempts = attempts + 1
    io.stdout:write("attempt ", attempts, " ", json, "\n")
    io.stdout:flush()
    if %d > 0 then wsup.sleep(%d) end
    local ok = attempts >= %d
    if ok then io.stdout:write("delivered ", json, "\n") io.stdout:flush() end
    return ok
  end }
]]):format(name, base or 50, base or 50, hold, hold, ok_from)
end

-- The exit status and the ms it took, for a process that is expected to end by itself.
local function finish(p, secs)
  local rc = p:wait(secs or 10)
  return rc, (p.ended_at or cli.now()) - p.t0
end

describe("host lifecycle", function()
  after_each(cli.cleanup)

  describe("when the script ends", function()
    it("drains uploaders that still hold state, then exits 0 once everything is delivered", function()
      local s = cli.script(uploader_src("slowpoke", 200, 1) .. [[
up:enqueue { worker_status = "busy" }
io.stdout:write("main chunk done\n")
]])
      local r = cli.run(WSUP .. " " .. s)
      assert.equal(0, r.rc, r.err)
      local out = cli.lines(r.out)
      assert.same({ "main chunk done", 'attempt 1 {"worker_status":"busy"}', 'delivered {"worker_status":"busy"}' },
        out)
      assert.equal("", r.err)
    end)

    it("exits 3 after --drain-ms when a send keeps failing, with one line per undelivered uploader and why", function()
      local s = cli.script(uploader_src("alpha", 0, math.maxinteger) .. [[
local beta = wsup.uploader { name = "beta", base_delay_ms = 50, jitter_ms = 0,
  send = function() error("beta cannot reach its server") end, on_error = function() end }
local gamma = wsup.uploader { name = "gamma", send = function() return true end }
up:enqueue { a = 1 }
beta:enqueue { b = 1 }
gamma:enqueue { c = 1 }
]])
      local r = cli.run(WSUP .. " --drain-ms 700 " .. s)
      assert.equal(3, r.rc, r.err)
      assert.is_true(r.ms >= 650 and r.ms < 1700, r.ms .. " ms")
      local und = cli.grep(r.err, "undelivered")
      assert.equal(2, #und, r.err)
      local text = table.concat(und, "\n")
      assert.matches("alpha", text)
      assert.matches("send returned false", text)
      assert.matches("beta", text)
      assert.matches("beta cannot reach its server", text)
      assert.is_nil(text:find("gamma"), text)
    end)

    it("wsup.drain_ms(ms) in the script sets the drain deadline, and reads back --drain-ms", function()
      local s = cli.script(uploader_src("stuck", 0, math.maxinteger) .. [[
io.stdout:write("cli ", wsup.drain_ms(), "\n")
wsup.drain_ms(300)
io.stdout:write("now ", wsup.drain_ms(), "\n")
up:enqueue { a = 1 }
]])
      local r = cli.run(WSUP .. " --drain-ms 4321 " .. s)
      assert.equal(3, r.rc, r.err)
      assert.truthy(r.out:find("cli 4321\n", 1, true), r.out)
      assert.truthy(r.out:find("now 300\n", 1, true), r.out)
      assert.is_true(r.ms >= 250 and r.ms < 1200, r.ms .. " ms")
    end)

    it("the default drain is 5000 ms", function()
      local s = cli.script('local wsup = require "wsup"; io.stdout:write(wsup.drain_ms())')
      local r = cli.run(WSUP .. " " .. s)
      assert.equal(0, r.rc, r.err)
      assert.equal("5000", r.out)
    end)

    it("exits 1 on an uncaught error in the main chunk, with the message and a traceback", function()
      local s = cli.script(uploader_src("fine", 0, 1) .. [[
up:enqueue { a = 1 }
local function deep() error("no config file here") end
deep()
]])
      local r = cli.run(WSUP .. " " .. s)
      assert.equal(1, r.rc, r.err)
      assert.matches("no config file here", r.err)
      assert.matches("traceback", r.err)
    end)

    it("a main chunk that raises still closes its <close> variables, as stock Lua does, and exits 1", function()
      local r = cli.run(WSUP .. " " .. cli.script([[
local x <close> = setmetatable({}, { __close = function(_, e) print("closed", e ~= nil) end })
error("boom")
]]))
      assert.equal(1, r.rc, r.err)
      assert.equal("closed\ttrue\n", r.out)
      assert.matches("boom", r.err)
    end)

    it("an error in a callback is reported, the loop goes on, and the exit status stays 0", function()
      local s = cli.script(uploader_src("after-error", 0, 1) .. [[
wsup.after(10, function() error("timer went wrong") end)
wsup.after(50, function() up:enqueue { late = true } end)
]])
      local r = cli.run(WSUP .. " " .. s)
      assert.equal(0, r.rc, r.err)
      assert.matches("timer went wrong", r.err)
      assert.truthy(r.out:find('delivered {"late":true}', 1, true), r.out)
    end)

    it("`local up <close>` closes at the end of its scope: pending state is dropped and reported (exit 3)", function()
      local s = cli.script([[
local wsup = require "wsup"
local sends, kept = 0, nil
do
  local up <close> = wsup.uploader { name = "scoped", send = function() sends = sends + 1 return true end }
  kept = up
  up:enqueue { a = 1 }
end
io.stdout:write(tostring(kept:stats().closed), " ", sends, " ", tostring(kept:enqueue { b = 2 }), "\n")
]])
      local r = cli.run(WSUP .. " " .. s)
      assert.equal("true 0 false\n", r.out)
      assert.equal(3, r.rc, r.err)
      local und = cli.grep(r.err, "undelivered")
      assert.equal(1, #und, r.err)
      assert.matches("scoped", und[1])
    end)

    it("an uploader closed with state undelivered is still reported after it was collected: exit 3", function()
      local r = cli.run(WSUP .. " " .. cli.script([[
local wsup = require "wsup"
do
  local up <close> = wsup.uploader { name = "scoped", send = function() return true end }
  up:enqueue { worker_status = "busy" }
end
local up2 = wsup.uploader { name = "dropped-later", send = function() return true end }
up2:enqueue { worker_status = "idle" }
up2:close()
up2 = nil -- luacheck: ignore
collectgarbage()
collectgarbage()
]]))
      assert.equal(3, r.rc, r.err)
      local und = cli.grep(r.err, "undelivered")
      assert.equal(2, #und, r.err)
      table.sort(und, function(a, b) return a:match("error (.*)") < b:match("error (.*)") end)
      assert.matches("dropped%-later: undelivered: closed before it was delivered$", und[1])
      assert.matches("scoped: undelivered: closed before it was delivered$", und[2])
    end)

    it("`local up <close>` that flushed inside its scope delivered everything: exit 0", function()
      local s = cli.script([[
local wsup = require "wsup"
do
  local up <close> = wsup.uploader { name = "scoped", send = function() wsup.sleep(30) return true end }
  up:enqueue { a = 1 }
  assert(up:flush(2000))
end
]])
      local r = cli.run(WSUP .. " " .. s)
      assert.equal(0, r.rc, r.err)
      assert.equal("", r.err)
    end)
  end)

  describe("the main chunk's return value", function()
    for _, c in ipairs { { "7", 7 }, { "0", 0 }, { "256", 255 }, { "-1", 255 }, { "1 << 40", 255 },
                         { "3.0", 3 }, { "2^3", 8 }, { "1e300", 255 }, { "7.5", 0 }, { '"7"', 0 } } do
      it(("return %s exits %d (a status the shell sees as it was meant: never 0 by wrapping)"):format(c[1], c[2]),
        function()
          local r = cli.run(WSUP .. " " .. cli.script("return " .. c[1] .. "\n"))
          assert.equal(c[2], r.rc, r.err)
        end)
    end
  end)

  describe("usage", function()
    for _, c in ipairs {
      { "", "no script" },
      { "--bogus x.lua", "an unknown option" },
      { "--drain-ms soon x.lua", "a non-numeric --drain-ms" },
      { "--drain-ms -1 x.lua", "a negative --drain-ms" },
      { "--drain-ms '' x.lua", "an empty --drain-ms" },
      { "--drain-ms 99999999999999999999999 x.lua", "a --drain-ms beyond the integers" },
    } do
      it("exits 2 with usage on stderr for " .. c[2], function()
        local r = cli.run(WSUP .. " " .. c[1])
        assert.equal(2, r.rc, r.err)
        assert.truthy(r.err:find("usage: wsup", 1, true), r.err)
      end)
    end

    it("--drain-ms without a value says so and exits 2", function()
      local r = cli.run(WSUP .. " --drain-ms")
      assert.equal(2, r.rc, r.err)
      assert.matches("%-%-drain%-ms needs a value", r.err)
    end)

    it("wsup test keeps the user's own Lua paths beside wsup's", function()
      local dir = cli.tmp(".d")
      assert(os.execute("mkdir -p " .. cli.q(dir)))
      cli.spit(dir .. "/mymod_for_wsup_test.lua", "return { answer = 42 }\n")
      cli.spit(dir .. "/paths_spec.lua", [[
describe("paths", function()
  it("finds both", function()
    assert.equal(42, require("mymod_for_wsup_test").answer)
    assert.is_table(require("wsup"))
  end)
end)
]])
      local cmd = ("env LUA_PATH_5_4=%s %s test %s"):format(cli.q(dir .. "/?.lua;;"), WSUP,
        cli.q(dir .. "/paths_spec.lua"))
      local r = cli.run(cmd, { timeout = 60 })
      os.execute("rm -rf " .. cli.q(dir))
      assert.equal(0, r.rc, r.out .. r.err)
    end)

    it("--help prints usage on stdout and exits 0", function()
      local r = cli.run(WSUP .. " --help")
      assert.equal(0, r.rc)
      assert.truthy(r.out:find("usage: wsup", 1, true), r.out)
    end)
  end)

  describe("signals", function()
    -- A script that never ends by itself: a ticking timer, and an uploader whose state is
    -- pending from the start.
    local function forever(prelude)
      return cli.script(prelude .. [[
up:enqueue { worker_status = "busy" }
wsup.every(50, function() end)
io.stdout:write("ready\n")
io.stdout:flush()
]])
    end

    it("a second SIGINT ends a script that keeps Lua busy and never returns to the loop", function()
      local p = cli.start(WSUP .. " " .. cli.script([[
io.stdout:write("ready\n")
io.stdout:flush()
while true do end
]]))
      assert.truthy(p:await("ready", "out"), p:stderr())
      p:kill("INT")
      cli.sleep(0.2)
      p:kill("INT")
      local rc = p:wait(5)
      if not rc then p:kill("KILL") end
      assert.equal(130, rc, p:stderr())
    end)

    it("SIGINT during a send: the drain waits for it, and exits 0 once it delivers", function()
      local p = cli.start(WSUP .. " --drain-ms 3000 " .. forever(uploader_src("mid-send", 500, 1)))
      assert.truthy(p:await("attempt 1", "out"), p:stderr())
      p:kill("INT")
      local rc, ms = finish(p)
      assert.equal(0, rc, p:stderr())
      assert.truthy(p:stdout():find("delivered", 1, true), p:stdout())
      assert.is_true(ms < 2500, ms .. " ms")
      assert.equal(0, #cli.grep(p:stderr(), "undelivered"), p:stderr())
    end)

    it("SIGTERM during backoff: the drain retries when the backoff ends and exits 0 once delivered", function()
      local p = cli.start(WSUP .. " --drain-ms 3000 " .. forever(uploader_src("in-backoff", 0, 2, 400)))
      assert.truthy(p:await("attempt 1", "out"), p:stderr())
      cli.sleep(0.1) -- now waiting out the 400 ms backoff
      p:kill("TERM")
      local rc = finish(p)
      assert.equal(0, rc, p:stderr())
      assert.truthy(p:stdout():find("attempt 2", 1, true), p:stdout())
      assert.truthy(p:stdout():find("delivered", 1, true), p:stdout())
    end)

    it("SIGTERM with a send that never succeeds: keeps trying for --drain-ms, then exits 3 naming it", function()
      local p = cli.start(WSUP .. " --drain-ms 800 " .. forever(uploader_src("hopeless", 0, math.maxinteger)))
      assert.truthy(p:await("attempt 1", "out"), p:stderr())
      local before = #cli.grep(p:stdout(), "^attempt")
      local t0 = cli.now()
      p:kill("TERM")
      local rc = finish(p)
      local ms = cli.now() - t0
      assert.equal(3, rc, p:stderr())
      assert.is_true(ms >= 700 and ms < 2000, ms .. " ms: the drain did not last --drain-ms")
      assert.is_true(#cli.grep(p:stdout(), "^attempt") > before + 3, "no attempts during the drain")
      local und = cli.grep(p:stderr(), "undelivered")
      assert.equal(1, #und, p:stderr())
      assert.matches("hopeless", und[1])
      assert.matches("send returned false", und[1])
    end)

    it("a second signal reports an uploader that kept failing as interrupted, with its last error", function()
      local p = cli.start(WSUP .. " --drain-ms 20000 " .. forever(uploader_src("failing", 0, math.maxinteger)))
      assert.truthy(p:await("attempt 2", "out"), p:stderr())
      p:kill("INT")
      cli.sleep(0.3)
      p:kill("INT")
      local rc = finish(p, 5)
      assert.equal(3, rc, p:stderr())
      local und = cli.grep(p:stderr(), "undelivered")
      assert.equal(1, #und, p:stderr())
      assert.matches("failing: undelivered: interrupted by a second signal %(last error: send returned false%)$",
        und[1])
    end)

    it("a signal that ends the script still closes the main chunk's <close> variables, after the drain", function()
      local p = cli.start(WSUP .. " " .. cli.script([[
local wsup = require "wsup"
local up = wsup.uploader { name = "u",
  send = function() wsup.sleep(300) io.stdout:write("delivered\n") return true end }
local x <close> = setmetatable({}, { __close = function()
  io.stdout:write("closed, pending ", tostring(up:stats().pending), "\n")
end })
up:enqueue { a = 1 }
io.stdout:write("ready\n")
io.stdout:flush()
wsup.sleep(60000)
]]))
      assert.truthy(p:await("ready", "out"), p:stderr())
      p:kill("TERM")
      local rc = finish(p, 5)
      assert.equal(0, rc, p:stderr())
      assert.equal("ready\ndelivered\nclosed, pending false\n", p:stdout())
    end)

    it("a second signal during the drain exits at once with 3 and one line per undelivered uploader", function()
      local p = cli.start(WSUP .. " --drain-ms 20000 " .. forever(uploader_src("long-send", 60000, 1)))
      assert.truthy(p:await("attempt 1", "out"), p:stderr())
      p:kill("INT")
      cli.sleep(0.3)
      assert.is_false(p:done(), "exited on the first signal instead of draining:\n" .. p:stderr())
      local t0 = cli.now()
      p:kill("TERM")
      local rc = finish(p, 5)
      assert.equal(3, rc, p:stderr())
      assert.is_true(cli.now() - t0 < 1000, (cli.now() - t0) .. " ms")
      local und = cli.grep(p:stderr(), "undelivered")
      assert.equal(1, #und, p:stderr())
      assert.matches("long%-send: undelivered: interrupted by a second signal$", und[1])
    end)

    it("SIGINT stops producers: a script reading a stdin that never ends exits 0 promptly", function()
      local s = cli.script([[
local wsup = require "wsup"
wsup.lines(io.stdin, function(line) if line then io.stdout:write("got ", line, "\n") io.stdout:flush() end end)
]])
      local p = cli.start(WSUP .. " " .. s, { fifo = true })
      p:write("hello\n")
      assert.truthy(p:await("got hello", "out"), p:stderr())
      p:kill("INT")
      local rc, ms = finish(p, 5)
      assert.equal(0, rc, p:stderr())
      assert.is_true(ms < 3000, ms .. " ms")
    end)

    it("a script's own wsup.signal('term') handler takes the first SIGTERM; the host keeps running", function()
      local s = cli.script([[
local wsup = require "wsup"
wsup.signal("term", function() io.stdout:write("script got term\n") io.stdout:flush() end)
wsup.every(20, function() end)
io.stdout:write("ready\n") io.stdout:flush()
]])
      local p = cli.start(WSUP .. " " .. s)
      assert.truthy(p:await("ready", "out"), p:stderr())
      p:kill("TERM")
      assert.truthy(p:await("script got term", "out"), p:stderr())
      cli.sleep(0.2)
      assert.is_false(p:done(), "the host stopped although the script handles SIGTERM:\n" .. p:stderr())
      local t0 = cli.now()
      p:kill("TERM") -- a second signal always exits at once
      assert.equal(0, finish(p, 5), p:stderr())
      assert.is_true(cli.now() - t0 < 1000)
    end)

    it("SIGTERM with nothing undelivered exits 0 at once, even with timers still ticking", function()
      local s = cli.script([[
local wsup = require "wsup"
wsup.every(20, function() end)
io.stdout:write("ready\n") io.stdout:flush()
]])
      local p = cli.start(WSUP .. " " .. s)
      assert.truthy(p:await("ready", "out"), p:stderr())
      local t0 = cli.now()
      p:kill("TERM")
      assert.equal(0, finish(p, 5), p:stderr())
      assert.is_true(cli.now() - t0 < 1000)
    end)

    -- A script that ends by itself with one send of hold_ms in flight, signalled once (sig)
    -- during the drain that follows; the drain must go on. Returns the process.
    local function signalled_while_draining(hold_ms, sig)
      local s = cli.script(uploader_src("tail", hold_ms, 1) .. "up:enqueue { a = 1 }\n")
      local p = cli.start(WSUP .. " --drain-ms 20000 " .. s)
      assert.truthy(p:await("attempt 1", "out"), p:stderr())
      p:kill(sig)
      cli.sleep(0.3)
      assert.is_false(p:done(), "the first signal cut the drain short:\n" .. p:stderr())
      return p
    end

    it("a signal during the drain of a script that ended by itself lets the drain deliver: exit 0", function()
      -- The drain waits for a send that takes 1.5 s. The signal means "stop producers and
      -- drain", which is already under way.
      local p = signalled_while_draining(1500, "TERM")
      local rc = finish(p, 5)
      assert.equal(0, rc, p:stderr())
      assert.truthy(p:stdout():find("delivered", 1, true), p:stdout())
      assert.equal(0, #cli.grep(p:stderr(), "undelivered"), p:stderr())
    end)

    it("a second signal during the drain of a script that ended by itself exits at once with 3", function()
      local p = signalled_while_draining(60000, "INT")
      local t0 = cli.now()
      p:kill("INT")
      local rc = finish(p, 5)
      assert.equal(3, rc, p:stderr())
      assert.is_true(cli.now() - t0 < 1000, (cli.now() - t0) .. " ms")
      assert.equal(1, #cli.grep(p:stderr(), "undelivered"), p:stderr())
    end)
  end)
end)
