-- Tasks, producers and uploaders at their edges: error objects that cannot be turned
-- into strings, many arguments, waiting where a task cannot yield, a producer dropped
-- from inside its own callback, files that are closed or borrowed, and reading the
-- pending patch while finalizers run. Each of these crashed, leaked or misbehaved once.
local wsup = require "wsup"
local harness = require "support.harness"
local cli = require "support.cli"

local WSUP = cli.WSUP
local BAD = 'setmetatable({}, {__tostring = function() error("no string for you") end})'

describe("an error object whose __tostring fails", function()
  after_each(cli.cleanup)

  it("at the top of a script: exits 1 naming the object's type, no abort", function()
    local r = cli.run(WSUP .. " " .. cli.script("error(" .. BAD .. ")\n"))
    assert.equal(1, r.rc, r.err)
    assert.matches("error object is a table value", r.err)
  end)

  it("a task's error that is already a string is reported as it is, even with the C stack nearly full", function()
    -- Tasks spawning tasks until Lua's C stack overflows: converting the message must not
    -- need another C call, which would fail and hide it.
    local r = cli.run(WSUP .. " " .. cli.script([[
local wsup = require "wsup"
local function f(n) if n < 1000 then wsup.spawn(f, n + 1) end end
wsup.spawn(f, 0)
]]))
    assert.matches("task error: [^\n]*stack overflow", r.err)
    assert.is_nil(r.err:find("error object is a", 1, true), r.err)
  end)

  it("in a task and in a send: is reported, the uploader retries, the script goes on", function()
    local r = cli.run(WSUP .. " " .. cli.script(([[
local wsup = require "wsup"
local bad = %s
wsup.spawn(function() error(bad) end)
local n, errs = 0, {}
local up = wsup.uploader { base_delay_ms = 10, jitter_ms = 0,
  send = function() n = n + 1; if n == 1 then error(bad) end; return true end,
  on_error = function(e) errs[#errs + 1] = e end }
up:enqueue { a = 1 }
print(up:flush(2000), n, #errs, errs[1]:match("error object is a table value") ~= nil)
]]):format(BAD)))
    assert.equal(0, r.rc, r.err)
    assert.equal("true\t2\t1\ttrue\n", r.out)
    assert.matches("task error: .*error object is a table value", r.err)
  end)
end)

describe("tasks", function()
  local H = harness.new()
  before_each(H.before)
  after_each(H.after)

  it("wsup.spawn passes many arguments", function()
    for _, n in ipairs { 200, 5000 } do
      local args, got = {}, nil
      for i = 1, n do args[i] = i end
      wsup.spawn(function(...) got = { n = select("#", ...), last = select(n, ...) } end, table.unpack(args))
      assert.same({ n = n, last = n }, got)
    end
  end)

  it("wsup.sleep where a task cannot yield raises, and leaves no timer to wake the task later", function()
    local up = H.track(wsup.uploader { send = function() wsup.sleep(200); return true end })
    local sorted, flushed, at
    wsup.spawn(function()
      wsup.sleep(0) -- from here on the task runs from the loop, which is running
      sorted = { pcall(table.sort, { 3, 2, 1 }, function(a, b) wsup.sleep(10); return a < b end) }
      up:enqueue { worker_status = "busy" }
      flushed = up:flush()
      at = wsup.now()
    end)
    wsup.run(1000)
    assert.is_false(sorted[1])
    assert.matches("cannot wait here", sorted[2])
    assert.is_true(flushed)
    assert.equals(200, at)
  end)

  it("flush where a task cannot yield raises, and registers no waiter", function()
    local up = H.track(wsup.uploader { send = function() wsup.sleep(100); return true end })
    local res
    wsup.spawn(function()
      wsup.sleep(0)
      up:enqueue { a = 1 }
      res = { pcall(table.sort, { 2, 1 }, function(a, b) up:flush(); return a < b end) }
    end)
    for _ = 1, 3 do collectgarbage() end -- the task has ended and may be collected
    wsup.run(1000)
    assert.is_false(res[1])
    assert.matches("cannot wait here", res[2])
    assert.is_true(up:flush(0))
  end)

  it("a host script's wait where it cannot yield raises, before and after its first wait alike", function()
    local r = cli.run(WSUP .. " " .. cli.script([[
local wsup = require "wsup"
local function sorted() return { pcall(table.sort, { 3, 1, 2 }, function(x, y) wsup.sleep(1); return x < y end) } end
local a = sorted()
wsup.sleep(1)
local b = sorted()
print(a[1], b[1], tostring(a[2]):match("cannot wait here") ~= nil, tostring(b[2]):match("cannot wait here") ~= nil)
]]))
    assert.equal(0, r.rc, r.err)
    assert.equal("false\tfalse\ttrue\ttrue\n", r.out)
  end)

  it("flush from inside the uploader's own send raises instead of waiting for itself", function()
    local res, up
    up = H.track(wsup.uploader { send = function()
      res = { pcall(up.flush, up, 1000) }
      return true
    end })
    up:enqueue { a = 1 }
    assert.is_true(up:flush(5000))
    assert.is_false(res[1])
    assert.matches("own send", res[2])
    assert.equals(0, wsup.now()) -- nothing waited
  end)

  it("under the virtual clock, a task spinning on wsup.sleep(0) still lets I/O complete", function()
    local path = cli.tmp(".txt")
    cli.spit(path, "first\n")
    local got
    H.keep(wsup.lines(path, function(l) got = got or l end))
    local spins
    wsup.spawn(function()
      spins = 0
      while not got and spins < 100000 do spins = spins + 1; wsup.sleep(0) end
    end)
    wsup.run(1000)
    assert.equals("first", got)
    assert.is_true(spins < 100000)
    assert.equals(0, wsup.now()) -- polling did not move virtual time
  end)
end)

describe("producers", function()
  local H = harness.new { clock = "real", drain_ms = 200 }
  before_each(H.before)
  after_each(function() H.after(); cli.cleanup() end)

  it("a lines producer stopped and dropped inside its own callback delivers nothing more", function()
    local path = cli.tmp(".txt")
    cli.spit(path, "a\nb\nc\n")
    local got, h = {}, nil
    h = wsup.lines(path, function(l)
      got[#got + 1] = l
      if h then h:stop(); h = nil; collectgarbage(); collectgarbage() end
    end)
    wsup.sleep(100)
    assert.same({ "a" }, got)
  end)

  it("a signal producer stopped and dropped inside its callback, with a second signal pending", function()
    local pid = assert(io.open("/proc/self/stat")):read("n")
    local got, h = 0, nil
    h = wsup.signal("usr1", function()
      got = got + 1
      if h then h:stop(); h = nil; collectgarbage(); collectgarbage() end
    end)
    os.execute(("kill -USR1 %d; sleep 0.05; kill -USR1 %d; sleep 0.05"):format(pid, pid))
    wsup.sleep(50)
    assert.equals(1, got)
  end)

  it("wsup.lines reads a named FIFO whose writer has come and gone, to its end", function()
    local fifo = cli.tmp(".fifo")
    os.remove(fifo)
    assert(os.execute("mkfifo " .. cli.q(fifo)))
    os.execute(("(sleep 0.2; printf 'a\\nb\\n' > %s) &"):format(cli.q(fifo))) -- the writer, in the background
    local r = cli.run(("%s %s"):format(WSUP,
      cli.script(([[
local wsup = require "wsup"
local f = assert(io.open(%q)) -- opens once the writer does
wsup.sleep(300)               -- the writer has written and gone
local got = {}
wsup.lines(f, function(l) got[#got + 1] = tostring(l) end)
wsup.sleep(200)
print(table.concat(got, ","))
]]):format(fifo))))
    os.remove(fifo)
    assert.equal(0, r.rc, r.err)
    assert.equal("a,b,nil\n", r.out)
  end)

  it("wsup.lines refuses a closed Lua file", function()
    local path = cli.tmp(".txt")
    cli.spit(path, "x\n")
    local f = assert(io.open(path))
    f:close()
    assert.has_error(function() wsup.lines(f, function() end) end)
  end)

  it("wsup.lines on a borrowed pipe leaves the caller's descriptor open and blocking", function()
    local path = cli.tmp(".txt")
    cli.spit(path, "kept\n")
    local p = assert(io.popen("printf 'a\\nb\\n'"))
    local got = {}
    wsup.lines(p, function(l) got[#got + 1] = l end)
    wsup.sleep(100)
    assert.same({ "a", "b" }, got)
    local f = assert(io.open(path)) -- would take the number of a descriptor closed under p
    assert.is_true(p:close())
    assert.equals("kept\n", f:read("a"))
    f:close()
  end)
end)

describe("uploaders and finalizers", function()
  local H = harness.new()
  before_each(H.before)
  after_each(H.after)

  it("up:pending() survives a finalizer that closes the uploader while the copy is being made", function()
    local up = H.track(wsup.uploader { send = function() wsup.sleep(1000); return true end })
    local m = {}
    for i = 1, 200 do m["key_" .. i .. ("x"):rep(30)] = ("v"):rep(40) end
    up:enqueue { worker_status = "idle" }
    wsup.sleep(0) -- in flight: the next patch stays pending
    up:enqueue { external_metadata = m }
    collectgarbage("incremental", 0, 100)
    local seen = 0
    for _ = 1, 50 do
      setmetatable({}, { __gc = function() up:close() end })
      local p = up:pending()
      if p then seen = seen + 1 end
    end
    collectgarbage("incremental", 200, 100)
    collectgarbage()
    assert.is_true(seen >= 1)
  end)

  it("says 'closed before it was delivered' for state lost at close after an earlier failure recovered", function()
    local r = cli.run(WSUP .. " " .. cli.script([[
local wsup = require "wsup"
local n = 0
local up = wsup.uploader { name = "u", base_delay_ms = 10, jitter_ms = 0,
  send = function() n = n + 1; if n == 1 then return false end; if n == 2 then return true end; coroutine.yield() end }
up:enqueue { a = 1 }
assert(up:flush(1000))
up:enqueue { a = 2 }
up:close()
]]))
    assert.equal(3, r.rc, r.err)
    assert.matches("u: undelivered: closed", r.err)
    assert.not_matches("undelivered: send returned false", r.err)
  end)
end)
