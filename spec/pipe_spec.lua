-- `build/wsup pipe`, driven the way a user drives it: JSON lines piped into the real
-- binary, the embedded receiver as the server, real signals, exit codes and stderr.
-- Everything runs on 127.0.0.1 under `timeout`; each case takes well under a second
-- unless it is about a deadline.
local wsup = require "wsup"
local cli = require "support.cli"

local WSUP, q = cli.WSUP, cli.q
local SUMMARY = "^lines (%d+), bad (%d+), requests (%d+), delivered (%d+), dropped (%d+)$"

-- The numbers of the one summary line on stderr (nil unless there is exactly one).
local function summary(err)
  local found = {}
  for _, line in ipairs(cli.lines(err)) do
    if line:match(SUMMARY) then found[#found + 1] = line end
  end
  if #found ~= 1 then return nil end
  local l, b, r, d, x = found[1]:match(SUMMARY)
  return { lines = tonumber(l), bad = tonumber(b), requests = tonumber(r), delivered = tonumber(d),
           dropped = tonumber(x) }
end

describe("wsup pipe", function()
  local rcv, url

  before_each(function()
    rcv = assert(wsup.receiver { port = 0 })
    url = rcv.url .. "/worker"
  end)

  after_each(function()
    cli.cleanup()
    rcv:close()
  end)

  local function pipe(input, args, opts)
    opts = opts or {}
    opts.stdin = input
    return cli.run(WSUP .. " pipe --url " .. q(opts.url or url) .. " " .. (args or ""), opts)
  end

  describe("delivery", function()
    it("PUTs the coalesced lines, prints nothing on stdout, one summary line on stderr, and exits 0", function()
      local r = pipe('{"worker_status":"busy","external_metadata":{"a":1}}\n' ..
                     '{"external_metadata":{"b":2}}\n' ..
                     '{"worker_status":"idle","internal_metadata":{"k":"v"}}\n')
      assert.equal(0, r.rc, r.err)
      assert.equal("", r.out)
      assert.same({ worker_status = "idle", external_metadata = { a = 1, b = 2 }, internal_metadata = { k = "v" } },
        rcv:state("/worker"))
      assert.equal(1, #cli.lines(r.err), r.err)
      local s = assert(summary(r.err), r.err)
      assert.equal(3, s.lines)
      assert.equal(0, s.bad)
      assert.equal(0, s.dropped)
      assert.is_true(s.requests >= 1 and s.requests <= 3, r.err)
      assert.equal(s.requests, s.delivered)
      assert.equal(s.requests, rcv:stats().requests)
    end)

    it("sends integers exactly: max and min int64 and an 18-digit id survive the trip", function()
      local r = pipe('{"external_metadata":{"max":9223372036854775807,"min":-9223372036854775808,' ..
                     '"id":123456789012345678,"f":0.1}}\n')
      assert.equal(0, r.rc, r.err)
      local st = rcv:state("/worker")
      assert.equal(math.maxinteger, st.external_metadata.max)
      assert.equal(math.mininteger, st.external_metadata.min)
      assert.equal(123456789012345678, st.external_metadata.id)
      assert.equal("integer", math.type(st.external_metadata.id))
      assert.equal(0.1, st.external_metadata.f)
    end)

    it("reports 99999999999999999999 (beyond int64) as a bad line instead of rounding it", function()
      local r = pipe('{"a":1}\n{"n":99999999999999999999}\n{"b":2}\n')
      assert.equal(0, r.rc, r.err)
      local bad = cli.grep(r.err, "^line ")
      assert.equal(1, #bad, r.err)
      assert.matches("^line 2: invalid JSON", bad[1])
      assert.same({ a = 1, b = 2 }, rcv:state("/worker"))
      local s = summary(r.err)
      assert.equal(3, s.lines)
      assert.equal(1, s.bad)
    end)

    it("coalesces a fast stream for a slow server: 300 lines become a handful of requests, last values win", function()
      rcv:delay(50)
      local input = {}
      for i = 1, 300 do input[i] = ('{"external_metadata":{"seq":%d,"k%d":%d}}'):format(i, i % 7, i) end
      local r = pipe(table.concat(input, "\n") .. "\n")
      assert.equal(0, r.rc, r.err)
      local s = assert(summary(r.err), r.err)
      assert.equal(300, s.lines)
      assert.is_true(s.requests < 30, "requests: " .. s.requests)
      local em = rcv:state("/worker").external_metadata
      assert.equal(300, em.seq)
      for k = 0, 6 do
        local last = 300 - ((300 - k) % 7) -- the last i with i % 7 == k
        assert.equal(last, em["k" .. k])
      end
    end)

    it("accepts CRLF line endings and a last line without a newline", function()
      local r = pipe('{"a":1}\r\n{"b":2}\r\n{"c":3}')
      assert.equal(0, r.rc, r.err)
      assert.same({ a = 1, b = 2, c = 3 }, rcv:state("/worker"))
      assert.equal(3, summary(r.err).lines)
      assert.equal(0, summary(r.err).bad)
    end)

    it("reads stdin redirected from a regular file", function()
      local f = cli.tmp()
      cli.spit(f, '{"from":"file"}\n{"n":2}\n')
      local r = cli.run(WSUP .. " pipe --url " .. q(url) .. " <" .. f, { stdin = false })
      assert.equal(0, r.rc, r.err)
      assert.same({ from = "file", n = 2 }, rcv:state("/worker"))
    end)

    it("retries through 503s with --base-delay-ms/--jitter-ms, then delivers and exits 0", function()
      rcv:fail(2, 503)
      local r = pipe('{"worker_status":"busy"}\n', "--base-delay-ms 20 --jitter-ms 0")
      assert.equal(0, r.rc, r.err)
      -- waits of 20 and 40 ms; the defaults (500 ms base, up to 500 of jitter) would take 1.5 s at least
      assert.is_true(r.ms < 1000, r.ms .. " ms")
      local s = summary(r.err)
      assert.equal(3, s.requests)
      assert.equal(1, s.delivered)
      assert.same({ worker_status = "busy" }, rcv:state("/worker"))
    end)

    it("exits 3 when the server drops the state with a 4xx, and counts it in the summary", function()
      rcv:fail(1, 422)
      local r = pipe('{"worker_status":"busy"}\n')
      assert.equal(3, r.rc, r.err)
      local s = summary(r.err)
      assert.equal(1, s.dropped)
      assert.equal(0, s.delivered)
      assert.is_nil(rcv:state("/worker"))
    end)
  end)

  describe("bad lines", function()
    it("prints 'line N: reason' for invalid JSON, arrays, scalars and blank lines, and delivers the rest", function()
      local input = table.concat({
        '{"a":1}',          -- 1
        'not json',         -- 2
        '[1,2,3]',          -- 3
        '"a string"',       -- 4
        '42',               -- 5
        '',                 -- 6
        '{"b":2',           -- 7 (truncated)
        '{"c":3}',          -- 8
        'null',             -- 9
      }, "\n") .. "\n"
      local r = pipe(input)
      assert.equal(0, r.rc, r.err)
      assert.same({ a = 1, c = 3 }, rcv:state("/worker"))
      local bad = cli.grep(r.err, "^line ")
      local nums = {}
      for i, l in ipairs(bad) do nums[i] = tonumber(l:match("^line (%d+): %S")) end
      assert.same({ 2, 3, 4, 5, 6, 7, 9 }, nums, r.err)
      assert.matches("^line 2: invalid JSON", bad[1])
      assert.matches("^line 3: not a JSON object", bad[2])
      assert.matches("^line 7: invalid JSON", bad[6])
      local s = summary(r.err)
      assert.equal(9, s.lines)
      assert.equal(7, s.bad)
    end)

    it("keeps pending state intact across a bad line (it is skipped, not half-applied)", function()
      local r = pipe('{"external_metadata":{"x":1}}\n{"external_metadata":{"y":2},"oops"}\n' ..
                     '{"external_metadata":{"z":3}}\n')
      assert.equal(0, r.rc, r.err)
      assert.same({ external_metadata = { x = 1, z = 3 } }, rcv:state("/worker"))
    end)

    it("--max-line: a longer line is reported 'line N: longer than 50 bytes' and skipped, even in one read", function()
      local long = '{"x":"' .. ("a"):rep(100) .. '"}'
      local r = pipe('{"a":1}\n' .. long .. '\n{"b":2}\n', "--max-line 50")
      assert.equal(0, r.rc, r.err)
      local bad = cli.grep(r.err, "^line ")
      assert.same({ "line 2: longer than 50 bytes" }, bad, r.err)
      assert.same({ a = 1, b = 2 }, rcv:state("/worker"))
      assert.equal(1, summary(r.err).bad)
    end)

    it("--max-line: a CRLF line of exactly the limit is taken (the CR is not counted)", function()
      local r = pipe('{"a":1}\r\n{"b":22}\r\n', "--max-line 7") -- the second is one byte too long
      assert.equal(0, r.rc, r.err)
      assert.same({ a = 1 }, rcv:state("/worker"))
      local bad = cli.grep(r.err, "^line ")
      assert.equal(1, #bad, r.err)
      assert.matches("^line 2: longer than 7 bytes", bad[1])
    end)

    it("--max-line: a line spanning many reads (300 KB) is reported once, with the right number", function()
      local long = '{"x":"' .. ("b"):rep(300000) .. '"}'
      local r = pipe('{"a":1}\n{"b":2}\n' .. long .. '\n{"c":3}\n', "--max-line 100000")
      assert.equal(0, r.rc, r.err)
      assert.same({ "line 3: longer than 100000 bytes" }, cli.grep(r.err, "^line "), r.err)
      assert.same({ a = 1, b = 2, c = 3 }, rcv:state("/worker"))
    end)

    it("a writer that dies mid-line: the earlier lines are delivered, the partial one is a bad line", function()
      local r = pipe(nil, nil, { stdin_shell = [[printf '{"a":1}\n{"b":2}\n{"c":' ]] })
      assert.equal(0, r.rc, r.err)
      assert.same({ a = 1, b = 2 }, rcv:state("/worker"))
      local bad = cli.grep(r.err, "^line ")
      assert.equal(1, #bad, r.err)
      assert.matches("^line 3: invalid JSON", bad[1])
    end)
  end)

  describe("usage", function()
    local cases = {
      { "", "no --url" },
      { "--url ftp://127.0.0.1/worker", "a URL that is not http(s)" },
      { "--url", "--url without a value" },
      { "--url http://127.0.0.1:1/w --bogus 1", "an unknown option" },
      { "--url http://127.0.0.1:1/w --drain-ms soon", "a non-numeric --drain-ms" },
      { "--url http://127.0.0.1:1/w --base-delay-ms -5", "a negative --base-delay-ms" },
      { "--url http://127.0.0.1:1/w --header NoColonHere", "a --header without 'Name: value'" },
      { "--url http://127.0.0.1:1/w stray", "a stray argument" },
      { "--url http://127.0.0.1:1/w --header 'Bad Name: v'", "a --header whose name is not a token" },
      { "--url http://127.0.0.1:1/w --header \"$(printf 'X: a\\rb')\"", "a --header value with a CR" },
      { "--url http://127.0.0.1:1/w --max-line 1e30", "a --max-line beyond the integers" },
      { "--url http://127.0.0.1:1/w --max-line 0", "a --max-line of 0 (every line would be too long)" },
      { "--url http://127.0.0.1:1/w --drain-ms 1e30", "a --drain-ms beyond the integers" },
    }
    for _, c in ipairs(cases) do
      it("exits 2 and prints usage on stderr for " .. c[2], function()
        local r = cli.run(WSUP .. " pipe " .. c[1], { stdin = '{"a":1}\n' })
        assert.equal(2, r.rc, r.err)
        assert.truthy(r.err:find("usage: wsup pipe", 1, true), r.err)
        assert.equal("", r.out)
      end)
    end

    it("prints usage on stdout and exits 0 for --help", function()
      local r = cli.run(WSUP .. " pipe --help")
      assert.equal(0, r.rc)
      assert.truthy(r.out:find("usage: wsup pipe", 1, true), r.out)
    end)
  end)

  describe("deadlines", function()
    it("a server that is down: exits 3 within --drain-ms, naming the URL and why", function()
      local port
      do
        local tmp = assert(wsup.receiver { port = 0 })
        port = tmp.port
        tmp:close()
      end
      local down = ("http://127.0.0.1:%d/worker"):format(port)
      local r = pipe('{"a":1}\n', "--drain-ms 600 --base-delay-ms 50 --jitter-ms 0", { url = down })
      assert.equal(3, r.rc, r.err)
      assert.is_true(r.ms >= 500 and r.ms < 1600, r.ms .. " ms")
      local und = cli.grep(r.err, "undelivered")
      assert.equal(1, #und, r.err)
      assert.truthy(und[1]:find(down, 1, true), und[1])
      assert.matches("refused", und[1])
      local s = assert(summary(r.err), r.err)
      assert.equal(0, s.delivered)
    end)

    it("a server that never answers: exits 3 within --drain-ms (once, not twice)", function()
      rcv:delay(20000)
      local r = pipe('{"a":1}\n', "--drain-ms 1000")
      assert.equal(3, r.rc, r.err)
      assert.is_true(r.ms >= 900 and r.ms < 1600, r.ms .. " ms: the drain deadline was not kept")
      assert.equal(1, #cli.grep(r.err, "undelivered"), r.err)
    end)

    it("stdin closed early, a slow request in flight: still delivers, exits 0 before the deadline", function()
      rcv:delay(300)
      local r = pipe('{"a":1}\n{"b":2}\n', "--drain-ms 5000")
      assert.equal(0, r.rc, r.err)
      assert.is_true(r.ms < 2500, r.ms .. " ms")
      assert.same({ a = 1, b = 2 }, rcv:state("/worker"))
    end)

    it("a closed stdin (<&-) reads as empty: summary with 0 lines, exit 0, no abort", function()
      local r = cli.run(WSUP .. " pipe --url " .. q(url) .. " --drain-ms 200 <&-", { stdin = false })
      assert.equal(0, r.rc, "exit " .. r.rc .. ": " .. r.err)
      local s = assert(summary(r.err), r.err)
      assert.equal(0, s.lines)
    end)

    it("a stdin it cannot read (a directory) says why on stderr and exits 1, at once", function()
      local t0 = cli.now()
      local r = cli.run(WSUP .. " pipe --url " .. q(url) .. " --drain-ms 200 </tmp", { stdin = false })
      assert.equal(1, r.rc, "exit " .. r.rc .. ": " .. r.err)
      assert.matches("^wsup pipe: .*cannot read a directory\n$", r.err)
      assert.is_true(cli.now() - t0 < 3000, (cli.now() - t0) .. " ms")
      assert.equal(0, rcv:stats().requests)
    end)

    it("stdin from /dev/null (cron, systemd, CI): summary with 0 lines, exit 0, no abort", function()
      local r = cli.run(WSUP .. " pipe --url " .. q(url) .. " --drain-ms 200 </dev/null", { stdin = false })
      assert.equal(0, r.rc, "exit " .. r.rc .. ": " .. r.err)
      local s = assert(summary(r.err), r.err)
      assert.equal(0, s.lines)
      assert.equal(0, rcv:stats().requests)
    end)
  end)

  describe("signals", function()
    it("SIGINT while stdin is still open: delivers what was read, prints the summary and exits 0", function()
      local p = cli.start(WSUP .. " pipe --url " .. q(url), { fifo = true })
      p:write('{"worker_status":"busy"}\n{"external_metadata":{"n":1}}\n')
      assert.truthy(cli.poll(function() return rcv:state("/worker") end, 5), "nothing arrived")
      p:kill("INT")
      local rc = p:wait(5)
      assert.equal(0, rc, p:stderr())
      assert.same({ worker_status = "busy", external_metadata = { n = 1 } }, rcv:state("/worker"))
      local s = summary(p:stderr())
      assert.truthy(s, "no summary after SIGINT:\n" .. p:stderr())
      assert.equal(2, s.lines)
    end)

    it("SIGTERM during a stalled request waits for it within --drain-ms and exits 0 when it lands", function()
      rcv:delay(600)
      local p = cli.start(WSUP .. " pipe --url " .. q(url) .. " --drain-ms 3000", { fifo = true })
      p:write('{"a":1}\n')
      cli.sleep(0.2) -- the PUT is now held by the server
      p:kill("TERM")
      local rc = p:wait(5)
      assert.equal(0, rc, p:stderr())
      assert.same({ a = 1 }, rcv:state("/worker"))
    end)

    it("a signal after the end of input, during the drain, still ends with the summary", function()
      rcv:delay(1500)
      local p = cli.start(WSUP .. " pipe --url " .. q(url) .. " --drain-ms 10000", { stdin = '{"a":2}\n' })
      cli.sleep(0.5) -- input has ended; the PUT is held by the server
      p:kill("INT")
      local rc = p:wait(8)
      assert.equal(0, rc, p:stderr())
      local s = assert(summary(p:stderr()), p:stderr())
      assert.equal(1, s.lines)
      assert.equal(1, s.delivered)
      assert.same({ a = 2 }, rcv:state("/worker"))
    end)

    it("a second signal exits at once with 3 and one line naming the undelivered URL", function()
      rcv:delay(20000)
      local p = cli.start(WSUP .. " pipe --url " .. q(url) .. " --drain-ms 15000", { fifo = true })
      p:write('{"a":1}\n')
      cli.sleep(0.2)
      p:kill("INT")
      cli.sleep(0.3)
      assert.is_false(p:done(), "exited on the first signal, without draining:\n" .. p:stderr())
      local t0 = cli.now()
      p:kill("INT")
      local rc = p:wait(5)
      assert.equal(3, rc, p:stderr())
      assert.is_true(cli.now() - t0 < 1000, "took " .. (cli.now() - t0) .. " ms")
      local und = cli.grep(p:stderr(), "undelivered")
      assert.equal(1, #und, p:stderr())
      assert.truthy(und[1]:find(url, 1, true), und[1])
    end)
  end)

  describe("progress", function()
    -- Runs the pipe under script(1), so stderr is a terminal; returns the raw bytes.
    local function on_tty(input_shell, args, host_flags)
      local out = cli.tmp()
      local inner = input_shell .. " | " .. WSUP .. " " .. (host_flags or "") .. " pipe --url " .. q(url) .. " " ..
        (args or "")
      local _, how, code = os.execute(("timeout -k 2 10 script -qefc %s /dev/null >%s 2>&1 </dev/null")
        :format(q(inner), out))
      return how == "exit" and code or 128 + code, cli.slurp(out) or ""
    end

    it("not on a TTY: stderr has no progress line, carriage return or escape code, only the summary", function()
      local r = pipe(nil, nil, { stdin_shell = [[(printf '{"a":1}\n'; sleep 0.3; printf '{"b":2}\n')]] })
      assert.equal(0, r.rc, r.err)
      assert.is_nil(r.err:find("[\r\27]"), r.err)
      assert.equal(1, #cli.lines(r.err), r.err)
    end)

    it("on a TTY: stderr shows a live progress line, redrawn in place, ending with the summary", function()
      local rc, out = on_tty([[(printf '{"a":1}\n'; sleep 0.4; printf '{"b":2}\n')]])
      assert.equal(0, rc, out)
      local redraws = select(2, out:gsub("\r\27%[K", ""))
      assert.is_true(redraws >= 3, "redraws: " .. redraws .. "\n" .. out)
      local final = out:gsub("\r\n", "\n"):match("\r\27%[K([^\r\n]*)\n%s*$")
      assert.truthy(final and final:match(SUMMARY), out)
      assert.same({ a = 1, b = 2 }, rcv:state("/worker"))
    end)

    it("on a TTY: log lines (failed attempts) start on their own line, not glued to the progress line", function()
      rcv:fail(2, 503)
      local rc, out = on_tty([[(printf '{"a":1}\n'; sleep 0.6)]], "--base-delay-ms 300 --jitter-ms 0", "-v")
      assert.equal(0, rc, out)
      local n = 0
      for before in out:gmatch("([^\n]?[^\n]?[^\n]?[^\n]?)%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ") do
        n = n + 1
        assert.truthy(before == "" or before:match("\r\27%[K$"), ("a log line glued to %q in:\n%s"):format(before, out))
      end
      assert.is_true(n >= 2, "expected two logged failures:\n" .. out)
    end)

    it("on a TTY: a bad-line message starts on its own line, not glued to the progress line", function()
      local rc, out = on_tty([[(printf '{"a":1}\n'; sleep 0.3; printf 'oops\n')]])
      assert.equal(0, rc, out)
      local s, e = out:find("line 2: invalid JSON", 1, true)
      assert.truthy(s, out)
      local before = out:sub(1, s - 1)
      assert.truthy(before == "" or before:match("\n$") or before:match("\r\27%[K$"),
        ("glued to %q"):format(before:sub(-60)))
      assert.truthy(e)
    end)
  end)
end)
