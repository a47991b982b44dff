-- Helpers for specs that drive build/wsup as a user would: a shell command with
-- redirections, real signals, exit codes and stderr lines. Every wait is bounded, and
-- every process a spec starts is killed (by its pid) if it is still running afterwards.
local wsup = require "wsup"

local M = {}

M.WSUP = "build/wsup"

-- Wall-clock ms, for measuring how long a subprocess took.
function M.now() return wsup.time_us() // 1000 end

function M.sleep(s) os.execute("sleep " .. s) end

function M.slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function M.spit(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- Single-quotes s for /bin/sh.
function M.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Lines of s, without their "\n".
function M.lines(s)
  local t = {}
  for l in (s or ""):gmatch("([^\n]*)\n") do t[#t + 1] = l end
  local tail = (s or ""):match("([^\n]+)$")
  if tail then t[#t + 1] = tail end
  return t
end

-- Polls fn every 20 ms for up to secs seconds; returns its first truthy result, or
-- nil on timeout (the caller asserts, with its own message).
function M.poll(fn, secs)
  local deadline = M.now() + (secs or 5) * 1000
  repeat
    local v = fn()
    if v then return v end
    M.sleep(0.02)
  until M.now() > deadline
  return nil
end

local tmps = {}
-- A fresh temporary path, removed by M.cleanup().
function M.tmp(suffix)
  local p = os.tmpname()
  if suffix then
    os.remove(p)
    p = p .. suffix
  end
  tmps[#tmps + 1] = p
  return p
end

-- A script file holding src, removed by M.cleanup().
function M.script(src)
  local p = M.tmp(".lua")
  M.spit(p, src)
  return p
end

-- Runs the shell command line cmd in the foreground under `timeout` and returns
-- { rc = exit status (124 on timeout, 128+n for a signal), out = stdout, err = stderr,
--   ms = wall time }. opts.stdin: a string fed as stdin (default: /dev/null);
-- opts.stdin_shell: a shell command whose output is piped in instead; opts.stdin = false:
-- no redirection at all (cmd brings its own); opts.timeout: s.
function M.run(cmd, opts)
  opts = opts or {}
  local out, err = M.tmp(), M.tmp()
  local input = " </dev/null"
  if opts.stdin then
    input = " <" .. M.tmp()
    M.spit(input:sub(3), opts.stdin)
  elseif opts.stdin == false then
    input = ""
  end
  local line = ("timeout -k 2 %s %s%s >%s 2>%s"):format(opts.timeout or 10, cmd, input, out, err)
  if opts.stdin_shell then
    line = ("%s | timeout -k 2 %s %s >%s 2>%s"):format(opts.stdin_shell, opts.timeout or 10, cmd, out, err)
  end
  local t0 = M.now()
  local _, how, code = os.execute(line)
  local ms = M.now() - t0
  return { rc = how == "exit" and code or 128 + code, out = M.slurp(out) or "", err = M.slurp(err) or "", ms = ms }
end

-- A process started in the background: its stdout and stderr go to files; stdin is
-- /dev/null, a string, or (opts.fifo) a FIFO the spec writes to with :write and
-- closes with :close_stdin (the reader then sees EOF).
local Proc = {}
Proc.__index = Proc

local procs = {}

function M.start(cmd, opts)
  opts = opts or {}
  local p = setmetatable({ outf = M.tmp(), errf = M.tmp(), pidf = M.tmp(), rcf = M.tmp() }, Proc)
  os.remove(p.rcf)
  local input = "/dev/null"
  if opts.fifo then
    input = M.tmp()
    os.remove(input)
    assert(os.execute("mkfifo " .. input))
  elseif opts.stdin then
    input = M.tmp()
    M.spit(input, opts.stdin)
  end
  assert(os.execute(("(%s <%s >%s 2>%s & echo $! >%s; wait $!; echo $? >%s) >/dev/null 2>&1 </dev/null &")
    :format(cmd, input, p.outf, p.errf, p.pidf, p.rcf)))
  if opts.fifo then
    -- Opened after the fork, so no child inherits a write end; O_RDWR never blocks on
    -- Linux and lets the child's open for reading complete.
    p.stdin = assert(io.open(input, "r+"))
    p.stdin:setvbuf("no")
  end
  p.pid = assert(M.poll(function() return (M.slurp(p.pidf) or ""):match("^(%d+)") end, 5), "no pid")
  procs[#procs + 1] = p
  p.t0 = M.now()
  return p
end

function Proc:write(s)
  self.stdin:write(s)
  self.stdin:flush()
end

function Proc:close_stdin()
  if self.stdin then
    self.stdin:close()
    self.stdin = nil
  end
end

function Proc:kill(sig)
  self.killed_at = self.killed_at or M.now()
  return os.execute(("kill -%s %s 2>/dev/null"):format(sig, self.pid))
end

-- The exit status, or nil if the process is still running after secs seconds.
function Proc:wait(secs)
  local rc = M.poll(function() return (M.slurp(self.rcf) or ""):match("^(%d+)") end, secs or 10)
  if rc and not self.ended_at then self.ended_at = M.now() end
  return rc and tonumber(rc)
end

function Proc:done() return (M.slurp(self.rcf) or ""):match("^%d+") ~= nil end
function Proc:stderr() return M.slurp(self.errf) or "" end
function Proc:stdout() return M.slurp(self.outf) or "" end

-- Waits until the process has written pattern (a Lua pattern) to stream ("err" or
-- "out"); returns the capture, or nil after secs seconds.
function Proc:await(pattern, stream, secs)
  return M.poll(function()
    local s = stream == "out" and self:stdout() or self:stderr()
    return s:match(pattern)
  end, secs or 5)
end

-- Kills what is still running (by pid) and removes temporary files.
function M.cleanup()
  for _, p in ipairs(procs) do
    p:close_stdin()
    if not p:done() then os.execute("kill -KILL " .. p.pid .. " 2>/dev/null") end
  end
  procs = {}
  for _, f in ipairs(tmps) do os.remove(f) end
  tmps = {}
end

-- The log format: "2026-01-02T03:04:05.678Z level who: message".
M.LOG = "^(%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ) (%a+) +([^:]+): (.*)$"

-- Parsed log lines of an stderr text (others are skipped): { time, level, who, msg }.
function M.log_lines(err)
  local t = {}
  for _, l in ipairs(M.lines(err)) do
    local time, level, who, msg = l:match(M.LOG)
    if time then t[#t + 1] = { time = time, level = level, who = who, msg = msg, line = l } end
  end
  return t
end

-- Lines of err that match the Lua pattern.
function M.grep(err, pattern)
  local t = {}
  for _, l in ipairs(M.lines(err)) do
    if l:find(pattern) then t[#t + 1] = l end
  end
  return t
end

return M
