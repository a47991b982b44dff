-- Producers: wsup.lines, wsup.watch and wsup.signal. In-process cases run on the real
-- clock (files, pipes and inotify are real) and are bounded by wsup.run deadlines;
-- stdin, descriptors, signals and error reports are checked through build/wsup.
local wsup = require "wsup"
local cli = require "support.cli"
local harness = require "support.harness"

local WSUP = cli.WSUP

-- Runs the loop until pred() holds or ms pass; returns pred().
local function run_until(pred, ms)
  local deadline = wsup.now() + (ms or 3000)
  while not pred() and wsup.now() < deadline do wsup.run(20) end
  return pred()
end

describe("producers", function()
  local H = harness.new { clock = "real", drain_ms = 50 }
  local keep = H.keep

  before_each(H.before)

  after_each(function()
    H.after()
    cli.cleanup()
  end)

  -- Collects fn's calls: each is { line, why } ({ nil } at EOF).
  local function collector()
    local calls = {}
    local function fn(line, why) calls[#calls + 1] = { line, why } end
    local function ended()
      for _, c in ipairs(calls) do
        if c[1] == nil then return true end
      end
      return false
    end
    return calls, fn, ended
  end

  describe("wsup.lines", function()
    it("calls fn once per line of a file, in order, without newlines or CRs, then fn(nil) once", function()
      local f = cli.tmp()
      cli.spit(f, "first\nsecond\r\n\nlast without newline")
      local calls, fn, ended = collector()
      keep(wsup.lines(f, fn))
      assert.is_true(run_until(ended))
      assert.same({ { "first" }, { "second" }, { "" }, { "last without newline" }, {} }, calls)
    end)

    it("runs fn as a task per line: fn may sleep, and the next lines do not wait for it", function()
      local f = cli.tmp()
      cli.spit(f, "slow\nfast\n")
      local order = {}
      keep(wsup.lines(f, function(line)
        if line == "slow" then wsup.sleep(100) end
        order[#order + 1] = line or "EOF"
      end))
      assert.is_true(run_until(function() return #order == 3 end))
      assert.equal("fast", order[1])
      table.sort(order)
      assert.same({ "EOF", "fast", "slow" }, order)
    end)

    it("reads a pipe without blocking the loop: timers keep ticking while the writer is slow", function()
      local src = assert(io.popen("sleep 0.3; echo late"))
      local ticks, got = 0, nil
      local t = wsup.every(20, function() ticks = ticks + 1 end)
      keep(wsup.lines(src, function(line) if line then got = { line = line, ticks = ticks } end end))
      local ok = run_until(function() return got ~= nil end)
      t:stop()
      src:close()
      assert.is_true(ok)
      assert.equal("late", got.line)
      assert.is_true(got.ticks >= 5, "only " .. got.ticks .. " ticks before the line")
    end)

    it("a line longer than max_line gives fn(false, 'line N: longer than X bytes'), then the next lines", function()
      local f = cli.tmp()
      cli.spit(f, "ok\n" .. ("x"):rep(20) .. "\nfine\n")
      local calls, fn, ended = collector()
      keep(wsup.lines(f, fn, { max_line = 8 }))
      assert.is_true(run_until(ended))
      assert.same({ { "ok" }, { false, "line 2: longer than 8 bytes" }, { "fine" }, {} }, calls)
    end)

    it("a too-long line spanning many reads is reported once, and line numbers stay right", function()
      local f = cli.tmp()
      cli.spit(f, "a\n" .. ("y"):rep(300000) .. "\nb\n" .. ("z"):rep(200000))
      local calls, fn, ended = collector()
      keep(wsup.lines(f, fn, { max_line = 100000 }))
      assert.is_true(run_until(ended, 5000))
      assert.same({ { "a" }, { false, "line 2: longer than 100000 bytes" }, { "b" },
                    { false, "line 4: longer than 100000 bytes" }, {} }, calls)
    end)

    it("a line of exactly max_line bytes is accepted", function()
      local f = cli.tmp()
      cli.spit(f, ("e"):rep(8) .. "\n")
      local calls, fn, ended = collector()
      keep(wsup.lines(f, fn, { max_line = 8 }))
      assert.is_true(run_until(ended))
      assert.same({ { ("e"):rep(8) }, {} }, calls)
    end)

    it(":stop() from fn ends delivery at once: no further lines and no fn(nil)", function()
      local f = cli.tmp()
      local many = {}
      for i = 1, 100 do many[i] = "l" .. i end
      cli.spit(f, table.concat(many, "\n") .. "\n")
      local seen, h = {}, nil
      h = keep(wsup.lines(f, function(line)
        seen[#seen + 1] = line or "EOF"
        if #seen == 3 then h:stop() end
      end))
      wsup.run(300)
      assert.same({ "l1", "l2", "l3" }, seen)
      assert.is_false(h:active())
      assert.matches("stopped", tostring(h))
    end)

    it("returns nil and a message naming a path that cannot be opened", function()
      local h, err = wsup.lines("/nonexistent/dir/file.jsonl", function() end)
      assert.is_nil(h)
      assert.matches("/nonexistent/dir/file.jsonl", err, 1, true)
    end)

    it("returns nil and a message for a directory", function()
      local h, err = wsup.lines("/tmp", function() end)
      assert.is_nil(h)
      assert.matches("director", err)
    end)

    it("raises for a max_line that is not a positive integer, naming it", function()
      local f = cli.tmp()
      cli.spit(f, "x\n")
      for _, bad in ipairs { 0, -1, 1.5, "10" } do
        assert.has_error(function() wsup.lines(f, function() end, { max_line = bad }) end,
          "wsup.lines: max_line must be a positive integer")
      end
    end)

    it("/dev/null (a character device) reads as an empty stream: fn(nil) once", function()
      -- In a child: libuv aborts the process when it is asked to poll what epoll cannot.
      local src = cli.script([[
local wsup = require "wsup"
assert(wsup.lines("/dev/null", function(line) io.stdout:write(tostring(line), "\n") end))
]])
      local r = cli.run(WSUP .. " " .. src)
      assert.equal(0, r.rc, "exit " .. r.rc .. "\n" .. r.err)
      assert.equal("nil\n", r.out)
    end)

    it("raises for a source that is neither a file, a descriptor nor a path", function()
      assert.has_error(function() wsup.lines({}, function() end) end)
      assert.has_error(function() wsup.lines(io.stdin) end) -- no function
    end)

    it("reads io.stdin in the host, one task per line, and fn(nil) at EOF", function()
      local s = cli.script([[
local wsup = require "wsup"
wsup.lines(io.stdin, function(line) io.stdout:write(line == nil and "EOF" or ("[" .. line .. "]"), "\n") end)
]])
      local r = cli.run(WSUP .. " " .. s, { stdin_shell = [[(printf 'one\ntwo\n'; sleep 0.2; printf 'three')]] })
      assert.equal(0, r.rc, r.err)
      assert.equal("[one]\n[two]\n[three]\nEOF\n", r.out)
    end)

    it("reads a descriptor number given by the shell (3<file)", function()
      local f = cli.tmp()
      cli.spit(f, "from fd 3\n")
      local s = cli.script([[
local wsup = require "wsup"
wsup.lines(3, function(line) io.stdout:write(tostring(line), "\n") end)
]])
      local r = cli.run(WSUP .. " " .. s .. " 3<" .. f)
      assert.equal(0, r.rc, r.err)
      assert.equal("from fd 3\nnil\n", r.out)
    end)

    it("reads a Lua file from where the script left it, and leaves the file where reading ended", function()
      local f = cli.tmp()
      cli.spit(f, "header\nline1\nline2\n")
      local h = assert(io.open(f))
      assert.equal("header", h:read("l")) -- stdio read ahead: the descriptor is past it all
      local calls, fn, ended = collector()
      keep(wsup.lines(h, fn))
      assert.is_true(run_until(ended))
      assert.same({ { "line1" }, { "line2" }, {} }, calls)
      assert.equal("", h:read("a")) -- what wsup read is consumed: the file reads on from the end
      h:close()
    end)

    it("reads a stdin or descriptor the shell has partly read from where it was left", function()
      local f = cli.tmp()
      cli.spit(f, "skipped\nkept 1\nkept 2\n")
      local s = cli.script([[
local wsup = require "wsup"
wsup.lines(tonumber(arg[1]) or io.stdin, function(line) io.stdout:write(tostring(line), "\n") end)
]])
      local r = cli.run("sh -c 'read -r _; " .. WSUP .. " " .. s .. "' <" .. f, { stdin = false })
      assert.equal(0, r.rc, r.err)
      assert.equal("kept 1\nkept 2\nnil\n", r.out)
      r = cli.run("sh -c 'read -r _ <&3; " .. WSUP .. " " .. s .. " 3' 3<" .. f)
      assert.equal(0, r.rc, r.err)
      assert.equal("kept 1\nkept 2\nnil\n", r.out)
    end)

    it("an error in fn is reported with its message, and the following lines still arrive", function()
      local s = cli.script([[
local wsup = require "wsup"
wsup.lines(io.stdin, function(line)
  if line == "boom" then error("cannot handle " .. line) end
  io.stdout:write(tostring(line), "\n")
end)
]])
      local r = cli.run(WSUP .. " " .. s, { stdin = "a\nboom\nb\n" })
      assert.equal(0, r.rc, r.err)
      assert.equal("a\nb\nnil\n", r.out)
      assert.matches("cannot handle boom", r.err)
    end)

    it("a failed wsup.lines (bad path) does not keep the host running", function()
      local s = cli.script([[
local wsup = require "wsup"
wsup.drain_ms(200)
assert(wsup.lines("/nonexistent/input.jsonl", function() end) == nil)
local up = wsup.uploader { name = "never", base_delay_ms = 20, jitter_ms = 0, send = function() return false end }
up:enqueue { a = 1 }
]])
      local r = cli.run(WSUP .. " " .. s, { timeout = 4 })
      assert.equal(3, r.rc, "exit " .. r.rc .. " after " .. r.ms .. " ms (124: still running)\n" .. r.err)
    end)

    it("stdin from /dev/null in the host: fn(nil) once, exit 0, no crash", function()
      local src = cli.script([[
local wsup = require "wsup"
wsup.lines(io.stdin, function(line) io.stdout:write(tostring(line), "\n") end)
]])
      local r = cli.run(WSUP .. " " .. src)
      assert.equal(0, r.rc, r.err)
      assert.equal("nil\n", r.out)
    end)
  end)

  describe("wsup.watch", function()
    local dir

    before_each(function()
      dir = cli.tmp()
      os.remove(dir)
      assert(os.execute("mkdir " .. dir))
    end)

    after_each(function()
      os.execute("rm -rf " .. dir)
    end)

    -- Watches f (debounced 20 ms), writes content to it, and checks that fn got f, once.
    local function change_is_reported(f, content)
      local calls = {}
      keep(assert(wsup.watch(f, function(p) calls[#calls + 1] = p end, { debounce_ms = 20 })))
      wsup.run(30)
      cli.spit(f, content)
      assert.is_true(run_until(function() return #calls >= 1 end, 2000))
      assert.same({ f }, calls)
    end

    it("watches a file by a path longer than 512 bytes", function()
      local d = dir
      for i = 1, 3 do
        d = d .. "/" .. (tostring(i)):rep(200)
        assert(os.execute("mkdir " .. d))
      end
      local f = d .. "/status.json"
      assert.is_true(#f > 600)
      cli.spit(f, "{}")
      change_is_reported(f, '{"n":1}')
    end)

    it("returns nil and a message for a path too long to exist", function()
      local h, err = wsup.watch(dir .. "/" .. ("d/"):rep(3000) .. "x", function() end)
      assert.is_nil(h)
      assert.matches("too long", err)
    end)

    it("raises for a debounce_ms that is not a non-negative number, naming it", function()
      for _, bad in ipairs { -1, "10" } do
        assert.has_error(function() wsup.watch(dir, function() end, { debounce_ms = bad }) end,
          "wsup.watch: debounce_ms must be a non-negative number of ms")
      end
    end)

    it("calls fn(path) once for a burst of writes (debounced), and again for a later change", function()
      local f = dir .. "/status.json"
      cli.spit(f, "{}")
      local calls = {}
      keep(assert(wsup.watch(f, function(p) calls[#calls + 1] = p end, { debounce_ms = 60 })))
      wsup.run(30)
      for i = 1, 5 do cli.spit(f, '{"n":' .. i .. "}") end
      assert.is_true(run_until(function() return #calls >= 1 end, 2000))
      wsup.run(200)
      assert.same({ f }, calls)
      cli.spit(f, '{"n":6}')
      assert.is_true(run_until(function() return #calls >= 2 end, 2000))
      assert.same({ f, f }, calls)
    end)

    it("stop() ends notifications", function()
      local f = dir .. "/s"
      cli.spit(f, "a")
      local n = 0
      local h = keep(assert(wsup.watch(f, function() n = n + 1 end, { debounce_ms = 20 })))
      h:stop()
      assert.is_false(h:active())
      cli.spit(f, "b")
      wsup.run(200)
      assert.equal(0, n)
    end)

    it("returns nil and a message naming a path whose directory does not exist", function()
      local h, err = wsup.watch(dir .. "/nodir/missing", function() end)
      assert.is_nil(h)
      assert.matches(dir .. "/nodir/missing", err, 1, true)
    end)

    it("a file that does not exist yet is reported once it is created", function()
      change_is_reported(dir .. "/later.json", "{}")
    end)

    it("changes to other files in the same directory are not reported", function()
      local f = dir .. "/mine.json"
      cli.spit(f, "{}")
      local n = 0
      keep(assert(wsup.watch(f, function() n = n + 1 end, { debounce_ms = 20 })))
      wsup.run(30)
      cli.spit(dir .. "/other.json", "{}")
      wsup.run(200)
      assert.equal(0, n)
    end)

    it("watching a directory reports a file created in it", function()
      local n = 0
      keep(assert(wsup.watch(dir, function(p)
        assert.equal(dir, p)
        n = n + 1
      end, { debounce_ms = 20 })))
      wsup.run(30)
      cli.spit(dir .. "/new", "x")
      assert.is_true(run_until(function() return n >= 1 end, 2000))
    end)

    it("keeps reporting changes after the file is replaced by rename (an atomic save)", function()
      local f = dir .. "/status.json"
      cli.spit(f, "1")
      local n = 0
      keep(assert(wsup.watch(f, function() n = n + 1 end, { debounce_ms = 20 })))
      wsup.run(30)
      cli.spit(f .. ".tmp", "2")
      assert(os.rename(f .. ".tmp", f))
      assert.is_true(run_until(function() return n >= 1 end, 2000), "the rename itself was not seen")
      wsup.run(100)
      local after_rename = n
      cli.spit(f, "3") -- an in-place write to the new file
      assert.is_true(run_until(function() return n > after_rename end, 1000),
        "a write to the file after an atomic replace was not seen")
    end)

    it("an error in fn is reported and the watch keeps running", function()
      local s = cli.script([[
local wsup = require "wsup"
local f = arg[1]
local n = 0
local h = assert(wsup.watch(f, function()
  n = n + 1
  if n == 1 then error("watch handler failed once") end
  io.stdout:write("change ", n, "\n")
end, { debounce_ms = 20 }))
local function write(s) local o = assert(io.open(f, "w")) o:write(s) o:close() end
wsup.sleep(30) write("a")
wsup.sleep(150) write("b")
wsup.sleep(150)
h:stop()
]])
      local f = dir .. "/w"
      cli.spit(f, "")
      local r = cli.run(WSUP .. " " .. s .. " " .. f)
      assert.equal(0, r.rc, r.err)
      assert.matches("watch handler failed once", r.err)
      assert.equal("change 2\n", r.out)
    end)
  end)

  describe("wsup.signal", function()
    it("calls fn(name) for each signal; an error in fn is reported and the next signal still arrives", function()
      local s = cli.script([[
local wsup = require "wsup"
local n = 0
local h
h = wsup.signal("usr1", function(name)
  n = n + 1
  io.stdout:write("got ", name, " ", n, "\n") io.stdout:flush()
  if n == 1 then error("signal handler failed once") end
  if n == 3 then h:stop() end
end)
io.stdout:write("ready\n") io.stdout:flush()
]])
      local p = cli.start(WSUP .. " " .. s)
      assert.truthy(p:await("ready", "out"), p:stderr())
      for i = 1, 3 do
        p:kill("USR1")
        assert.truthy(p:await("got usr1 " .. i, "out"), p:stdout() .. p:stderr())
      end
      -- After :stop() the host has no work left, so it exits by itself.
      assert.equal(0, p:wait(5), p:stderr())
      assert.matches("signal handler failed once", p:stderr())
    end)

    it("accepts names with or without SIG and in any case", function()
      for _, name in ipairs { "hup", "SIGHUP", "Usr2", "sigusr1" } do
        local h = keep(wsup.signal(name, function() end))
        assert.is_true(h:active(), name)
        h:stop()
      end
    end)

    it("raises for an unknown signal name", function()
      local ok, err = pcall(wsup.signal, "sigbogus", function() end)
      assert.is_false(ok)
      assert.matches("unknown signal", err)
    end)

    it("a script waiting only on a signal producer keeps running until the signal comes", function()
      local s = cli.script([[
local wsup = require "wsup"
wsup.signal("hup", function(name) io.stdout:write("bye on ", name, "\n") os.exit(0) end)
io.stdout:write("ready\n") io.stdout:flush()
]])
      local p = cli.start(WSUP .. " " .. s)
      assert.truthy(p:await("ready", "out"), p:stderr())
      cli.sleep(0.3)
      assert.is_false(p:done(), "exited without the signal")
      p:kill("HUP")
      assert.equal(0, p:wait(5), p:stderr())
      assert.equal("ready\nbye on hup\n", p:stdout())
    end)
  end)
end)
