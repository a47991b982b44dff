-- Each example, run as README says (build/wsup examples/NAME.lua ...), against an
-- embedded receiver started here (wsup.receiver{port=0} on 127.0.0.1). Real processes,
-- real clock; every wait is bounded and every process started here is killed if it
-- outlives its test.
-- Run: build/wsup test examples/spec   (also part of the main suite)
local wsup = require "wsup"

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local EX = HERE .. "/.."
local WSUP = os.getenv("WSUP_BIN") or (HERE .. "/../../build/wsup")

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local function spit(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function now() return wsup.time_us() // 1000 end

-- Polls fn every 20 ms for up to secs; its first truthy result, or nil.
local function poll(fn, secs)
  local deadline = now() + secs * 1000
  repeat
    local v = fn()
    if v then return v end
    os.execute("sleep 0.02")
  until now() > deadline
  return nil
end

local temps, pids = {}, {}
local function tmp()
  local p = os.tmpname()
  temps[#temps + 1] = p
  return p
end

-- Runs cmd (with env, a string of VAR=value words) in the foreground under timeout:
-- exit status, stdout, stderr.
local function run(env, cmd, secs)
  local out, err = tmp(), tmp()
  local _, how, code = os.execute(("%s timeout -k 2 %d %s </dev/null >%s 2>%s"):format(env or "", secs or 20, cmd,
    out, err))
  return how == "exit" and code or 128 + code, slurp(out), slurp(err)
end

-- Starts cmd in the background; returns { pid, out, err, rc } files.
local function start(env, cmd)
  local p = { out = tmp(), err = tmp(), pidf = tmp(), rcf = tmp() }
  os.remove(p.rcf)
  assert(os.execute(("(%s %s </dev/null >%s 2>%s & echo $! >%s; wait $!; echo $? >%s) >/dev/null 2>&1 &")
    :format(env or "", cmd, p.out, p.err, p.pidf, p.rcf)))
  p.pid = assert(poll(function() return slurp(p.pidf):match("^(%d+)") end, 5))
  pids[#pids + 1] = p
  return p
end

local function exit_status(p, secs)
  local rc = poll(function() return slurp(p.rcf):match("^(%d+)") end, secs or 10)
  return rc and tonumber(rc)
end

describe("examples", function()
  local rcv

  before_each(function()
    rcv = assert(wsup.receiver { port = 0 })
  end)

  after_each(function()
    for _, p in ipairs(pids) do
      if not slurp(p.rcf):match("%d") then os.execute("kill -KILL " .. p.pid .. " 2>/dev/null") end
    end
    pids = {}
    for _, f in ipairs(temps) do os.remove(f) end
    temps = {}
    rcv:close()
  end)

  describe("heartbeat.lua", function()
    it("beats for the seconds given, and the server holds the last beat with exact integers", function()
      local rc, out, err = run("WSUP_URL=" .. q(rcv.url .. "/worker"), WSUP .. " " .. EX .. "/heartbeat.lua 1")
      assert.equal(0, rc, err)
      assert.matches("done: 1 beats", out)
      local st = rcv:state("/worker")
      assert.equal("busy", st.worker_status)
      assert.equal(1, st.external_metadata.beats)
      assert.equal("integer", math.type(st.external_metadata.at_us))
      assert.is_true(st.external_metadata.at_us > 1600000000000000)
      assert.equal(1000003, st.internal_metadata.pid_hint)
    end)

    it("takes a fractional number of seconds, and beats once a second for that long", function()
      local rc, out, err = run("WSUP_URL=" .. q(rcv.url .. "/worker"), WSUP .. " " .. EX .. "/heartbeat.lua 1.5")
      assert.equal(0, rc, err)
      assert.matches("for 1.5 s", out)
      assert.matches("done: 2 beats", out) -- at 0 and 1 s
      assert.equal(2, rcv:state("/worker").external_metadata.beats)
    end)
  end)

  describe("status_file.lua", function()
    it("publishes each saved version (in place or by rename), skips invalid ones, and drains on SIGTERM", function()
      local dir = tmp()
      os.remove(dir)
      assert(os.execute("mkdir " .. dir))
      local file = dir .. "/status.json"
      local p = start(nil, ("%s %s/status_file.lua %s %s"):format(WSUP, EX, file, q(rcv.url .. "/worker")))
      assert.truthy(poll(function() return slurp(p.out):match("watching") end, 5), slurp(p.err))
      local function state_has(status)
        return poll(function()
          local st = rcv:state("/worker")
          return st and st.worker_status == status and st
        end, 5)
      end
      -- 1: written in place, pretty-printed over several lines
      spit(file, '{\n  "worker_status": "busy",\n  "external_metadata": {"job": 9007199254740993}\n}\n')
      local st = state_has("busy")
      assert.truthy(st, "first version not published:\n" .. slurp(p.err))
      assert.equal(9007199254740993, st.external_metadata.job)
      -- 2: replaced atomically (write a temp file, rename over)
      spit(dir .. "/.status.tmp", '{"worker_status":"idle","external_metadata":{"job":null}}')
      assert(os.rename(dir .. "/.status.tmp", file))
      st = state_has("idle")
      assert.truthy(st, "renamed version not published:\n" .. slurp(p.err))
      assert.is_nil(st.external_metadata.job)
      -- 3: invalid, then 4: valid again, written in place into the renamed file
      spit(file, '{"worker_status": "oops"')
      assert.truthy(poll(function() return slurp(p.err):match("invalid JSON") end, 5), slurp(p.err))
      spit(file, '{"worker_status":"draining"}')
      assert.truthy(state_has("draining"), "a write after the rename was not published:\n" .. slurp(p.err))
      assert.equal(3, rcv:stats()[200])
      os.execute("kill -TERM " .. p.pid)
      assert.equal(0, exit_status(p), slurp(p.err))
      os.execute("rm -rf " .. dir)
    end)

    it("with no URL uses its own embedded receiver and shows the state it converged to", function()
      local file = tmp()
      spit(file, '{"worker_status":"starting"}')
      local p = start(nil, ("%s %s/status_file.lua %s"):format(WSUP, EX, file))
      assert.truthy(poll(function() return slurp(p.out):match("worker_status=starting") end, 5),
        slurp(p.out) .. slurp(p.err))
      assert.matches("embedded receiver", slurp(p.out))
      os.execute("kill -INT " .. p.pid)
      assert.equal(0, exit_status(p), slurp(p.err))
    end)
  end)

  describe("fleet.lua", function()
    it("N workers on one loop all end idle on the server, with a summary", function()
      local rc, out, err = run(nil, ("%s %s/fleet.lua 20 1 %s"):format(WSUP, EX, q(rcv.url)))
      assert.equal(0, rc, err)
      assert.matches("fleet: %d+ enqueues %-> %d+ requests", out)
      assert.matches("0 workers undelivered", out)
      for i = 1, 20 do
        local st = rcv:state("/worker/" .. i)
        assert.truthy(st, "worker " .. i)
        assert.equal("idle", st.worker_status)
        assert.equal("integer", math.type(st.external_metadata.jobs))
        assert.is_nil(st.external_metadata.progress)
        assert.equal(1000 + i, st.internal_metadata.pid)
      end
    end)

    it("with its own receiver (and injected 503s) every worker converges", function()
      local rc, out, err = run(nil, ("%s %s/fleet.lua 10 0.5"):format(WSUP, EX))
      assert.equal(0, rc, err)
      assert.matches("converged 10/10", out)
      assert.is_nil(out:match(" 0 failed attempts"), "the injected 503s did not show:\n" .. out)
    end)
  end)

  describe("custom_policy.lua", function()
    it("the demo shows the token refresh after a 401 and a Retry-After wait, and ends idle", function()
      local rc, out, err = run("WSUP_SECRET=demo", WSUP .. " " .. EX .. "/custom_policy.lua")
      assert.equal(0, rc, err)
      assert.matches("token #2 %(refresh after a 401%)", out)
      assert.matches("server state: worker_status=idle done=1 job=nil", out)
      local wait = tonumber(out:match("last wait (%d+) ms"))
      assert.is_true(wait and wait >= 1000, out)
    end)

    it("sends to the URL given (with WSUP_TOKEN as its bearer token) and ends with the server idle", function()
      local rc, out, err = run("WSUP_SECRET=s WSUP_TOKEN=abc", ("%s %s/custom_policy.lua %s"):format(WSUP, EX,
        q(rcv.url .. "/worker")))
      assert.equal(0, rc, err .. out)
      local st = rcv:state("/worker")
      assert.equal("idle", st.worker_status)
      assert.equal(1, st.external_metadata.done)
    end)

    it("exits 2 and says so when WSUP_SECRET is not set", function()
      local rc, _, err = run("env -u WSUP_SECRET", WSUP .. " " .. EX .. "/custom_policy.lua")
      assert.equal(2, rc)
      assert.matches("WSUP_SECRET", err)
    end)
  end)
end)
