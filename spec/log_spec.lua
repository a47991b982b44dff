-- Logging, seen from stderr: one format (time, level, who, message) for the script's
-- wsup.log and the runtime's own messages; -v/-q move the level; secrets (credential
-- headers, URL userinfo) never reach the log.
local wsup = require "wsup"
local cli = require "support.cli"

local WSUP, q = cli.WSUP, cli.q

-- Runs a script given as source with host flags; returns the cli.run result.
local function host(flags, src, opts)
  return cli.run(WSUP .. " " .. flags .. " " .. cli.script(src), opts)
end

-- Every stderr line that is not part of a traceback must be a log line.
local function assert_all_log_lines(err)
  local in_traceback = false
  for _, l in ipairs(cli.lines(err)) do
    if l:match("^stack traceback:") then
      in_traceback = true
    elseif in_traceback and l:match("^%s") then -- luacheck: ignore 542
      -- a traceback frame
    else
      in_traceback = false
      assert.truthy(l:match(cli.LOG), ("not in the log format: %q\nin:\n%s"):format(l, err))
    end
  end
end

local LEVELS = [[
local wsup = require "wsup"
wsup.log("debug", "d %d", 1)
wsup.log("info", "i %d", 2)
wsup.log("warn", "w %d", 3)
wsup.log("error", "e %d", 4)
io.stdout:write(wsup.log_level())
]]

local function levels_of(err)
  local t = {}
  for _, e in ipairs(cli.log_lines(err)) do t[#t + 1] = e.level .. ":" .. e.msg end
  return t
end

describe("logging", function()
  after_each(cli.cleanup)

  it("wsup.log writes one line: UTC time with ms, level, who, and the string.format'ed message", function()
    local before = os.time()
    local r = host("", [[
local wsup = require "wsup"
wsup.log("warn", "disk %s at %d%% (%d)", "/var", 93, math.maxinteger)
]])
    local after = os.time()
    assert.equal(0, r.rc, r.err)
    local ls = cli.lines(r.err)
    assert.equal(1, #ls, r.err)
    local e = cli.log_lines(r.err)[1]
    assert.truthy(e, r.err)
    assert.equal("warn", e.level)
    assert.equal("disk /var at 93% (9223372036854775807)", e.msg)
    assert.truthy(#e.who > 0)
    local y, mo, d, h, mi, s = e.time:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
    local utc = os.time { year = y, month = mo, day = d, hour = h, min = mi, sec = s, isdst = false }
    local offset = os.time() - os.time(os.date("!*t")) -- local time's offset from UTC
    utc = utc + offset
    assert.is_true(utc >= before - 1 and utc <= after + 1, e.time .. " is not now in UTC")
  end)

  it("shows info, warn and error by default and hides debug", function()
    local r = host("", LEVELS)
    assert.same({ "info:i 2", "warn:w 3", "error:e 4" }, levels_of(r.err))
    assert.equal("info", r.out)
  end)

  it("-v shows debug too", function()
    local r = host("-v", LEVELS)
    assert.same({ "debug:d 1", "info:i 2", "warn:w 3", "error:e 4" }, levels_of(r.err))
    assert.equal("debug", r.out)
  end)

  it("-q hides info; -q -q hides warnings; errors always show", function()
    assert.same({ "warn:w 3", "error:e 4" }, levels_of(host("-q", LEVELS).err))
    assert.same({ "error:e 4" }, levels_of(host("-q -q", LEVELS).err))
    assert.same({ "error:e 4" }, levels_of(host("-q -q -q", LEVELS).err))
    assert.equal("error", host("-q -q", LEVELS).out)
  end)

  it("wsup.log_level(level) changes the level at run time", function()
    local r = host("", [[
local wsup = require "wsup"
wsup.log("debug", "hidden")
wsup.log_level("debug")
wsup.log("debug", "shown")
wsup.log_level("error")
wsup.log("warn", "hidden too")
]])
    assert.same({ "debug:shown" }, levels_of(r.err))
  end)

  it("an unknown level is an error that names it", function()
    local ok, err = pcall(wsup.log, "loud", "x")
    assert.is_false(ok)
    assert.matches("loud", err)
    assert.is_false((pcall(wsup.log_level, "verbose")))
  end)

  it("the runtime's messages (failed attempts, signals, undelivered state) share the format", function()
    local p = cli.start(WSUP .. " -v --drain-ms 300 " .. cli.script([[
local wsup = require "wsup"
local up = wsup.uploader { name = "flaky", base_delay_ms = 20, jitter_ms = 0, send = function() return false end }
up:enqueue { a = 1 }
wsup.log("info", "started")
wsup.every(50, function() end)
]]))
    assert.truthy(p:await("attempt failed"), p:stderr())
    p:kill("TERM")
    assert.equal(3, p:wait(5), p:stderr())
    local err = p:stderr()
    assert_all_log_lines(err)
    local who = {}
    for _, e in ipairs(cli.log_lines(err)) do who[e.who] = (who[e.who] or 0) + 1 end
    assert.truthy(who.flaky, err)
    assert.truthy(cli.grep(err, " flaky: undelivered")[1], err)
    assert.truthy(cli.grep(err, "SIGTERM")[1], err)
  end)

  it("an error raised in a callback is logged at level error, in the format, with its traceback", function()
    local r = host("", [[
local wsup = require "wsup"
wsup.after(1, function() error("callback exploded") end)
]])
    assert.equal(0, r.rc, r.err)
    assert_all_log_lines(r.err)
    local e = cli.log_lines(r.err)[1]
    assert.truthy(e, r.err)
    assert.equal("error", e.level)
    assert.matches("callback exploded", e.msg)
    assert.matches("stack traceback:", r.err)
  end)

  it("an uncaught error in the main chunk is logged at level error, in the format", function()
    local r = host("", 'error("main chunk exploded")')
    assert.equal(1, r.rc, r.err)
    assert_all_log_lines(r.err)
    local e = cli.log_lines(r.err)[1]
    assert.truthy(e, r.err)
    assert.equal("error", e.level)
    assert.matches("main chunk exploded", e.msg)
  end)

  describe("secrets", function()
    local rcv

    before_each(function()
      rcv = assert(wsup.receiver { port = 0 })
    end)

    after_each(function()
      rcv:close()
    end)

    it("URL userinfo is redacted wherever the uploader's URL is logged (failures, undelivered)", function()
      local port = rcv.port
      rcv:close()
      rcv = assert(wsup.receiver { port = 0 }) -- keep after_each happy; `port` is now closed
      local r = host("-v --drain-ms 200", ([[
local wsup = require "wsup"
local up = wsup.uploader { url = "http://alice:pa55word@127.0.0.1:%d/worker", base_delay_ms = 20, jitter_ms = 0 }
up:enqueue { a = 1 }
]]):format(port))
      assert.equal(3, r.rc, r.err)
      assert.is_nil(r.err:find("pa55word", 1, true), r.err)
      assert.is_nil(r.err:find("alice", 1, true), r.err)
      assert.truthy(r.err:find(("http://***@127.0.0.1:%d/worker"):format(port), 1, true), r.err)
    end)

    it("pipe: credential headers and URL userinfo never reach stderr, even at -v with failures", function()
      rcv:fail(1, 401)
      local u = rcv.url:gsub("^http://", "http://bob:hunter2@") .. "/worker"
      local r = cli.run(WSUP .. " -v pipe --url " .. q(u) ..
        " --header 'Authorization: Bearer TOPSECRET' --header 'X-Api-Key: KEY-1234' --header 'Cookie: sid=COOKIE9'",
        { stdin = '{"a":1}\nnot json\n' })
      assert.equal(3, r.rc, r.err)
      for _, secret in ipairs { "hunter2", "TOPSECRET", "KEY-1234", "COOKIE9" } do
        assert.is_nil(r.err:find(secret, 1, true), secret .. " leaked:\n" .. r.err)
      end
      assert.truthy(r.err:find("401", 1, true), r.err)
    end)

    it("a send policy's error that quotes its Authorization header or URL is redacted in the log", function()
      local r = host("--drain-ms 100", [[
local wsup = require "wsup"
local up = wsup.uploader { name = "leaky", base_delay_ms = 1000, send = function()
  error("PUT http://carol:s3cr3t@127.0.0.1:1/worker failed; sent Authorization: Bearer TOKEN123")
end }
up:enqueue { a = 1 }
]])
      assert.equal(3, r.rc, r.err)
      assert.truthy(r.err:find("failed", 1, true), r.err)
      assert.is_nil(r.err:find("s3cr3t", 1, true), r.err)
      assert.is_nil(r.err:find("TOKEN123", 1, true), r.err)
    end)

    it("wsup.log redacts URL userinfo and Authorization values in the script's own messages", function()
      local r = host("", [[
local wsup = require "wsup"
wsup.log("info", "posting to %s", "https://dave:letmein@example.invalid/w")
wsup.log("info", "headers: Authorization: Basic ZGF2ZTpsZXRtZWlu")
]])
      assert.is_nil(r.err:find("letmein", 1, true), r.err)
      assert.is_nil(r.err:find("ZGF2ZTpsZXRtZWlu", 1, true), r.err)
      assert.truthy(r.err:find("example.invalid/w", 1, true), r.err)
    end)
  end)
end)
