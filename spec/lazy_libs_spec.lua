-- libcurl, libmicrohttpd and libcrypto are loaded on first use (src/dl.h), so a process
-- that never makes or serves a request does not map them (about 6 MB of RSS). Checked
-- in a fresh build/wsup process, through /proc/self/maps, since busted's own process
-- has long loaded them for other specs.
local cli = require "support.cli"

local PRELUDE = [[
local wsup = require "wsup"
local function mapped(name)
  local f = assert(io.open("/proc/self/maps"))
  local maps = f:read("a")
  f:close()
  return maps:find(name, 1, true) ~= nil
end
local function report(when)
  print(when, mapped("libcurl"), mapped("libmicrohttpd"), mapped("libcrypto"))
end
]]

local function run(body)
  local r = cli.run(cli.WSUP .. " " .. cli.script(PRELUDE .. body), { timeout = 20 })
  assert.equals(0, r.rc, r.err)
  local seen = {}
  for _, line in ipairs(cli.lines(r.out)) do
    local when, curl, mhd, crypto = line:match("^(%S+)\t(%a+)\t(%a+)\t(%a+)$")
    if when then seen[when] = { curl = curl == "true", mhd = mhd == "true", crypto = crypto == "true" } end
  end
  return seen
end

describe("libraries loaded on first use", function()
  after_each(cli.cleanup)

  it("a script with a Lua send policy maps none of libcurl, libmicrohttpd, libcrypto", function()
    local seen = run([[
local up = wsup.uploader { send = function() return true end }
up:enqueue { worker_status = "idle" }
assert(up:flush(1000))
report("after")
]])
    assert.same({ curl = false, mhd = false, crypto = false }, seen.after)
  end)

  it("the receiver loads libmicrohttpd, the first request libcurl, hmac_sha256 libcrypto", function()
    local seen = run([[
report("start")
local rcv = wsup.receiver { port = 0 }
report("receiver")
local up = wsup.uploader { url = rcv.url .. "/worker/1" }
up:enqueue { worker_status = "idle" }
assert(up:flush(5000))
report("request")
assert(#wsup.hmac_sha256("key", "data") == 64)
report("hmac")
rcv:close()
]])
    assert.same({ curl = false, mhd = false, crypto = false }, seen.start)
    assert.is_false(seen.receiver.curl)
    assert.is_true(seen.receiver.mhd)
    assert.is_true(seen.request.curl)
    assert.is_true(seen.hmac.crypto)
  end)

  it("hmac_sha256 loads libcrypto by itself, before any request", function()
    -- (libcurl brings libcrypto along, so this is checked in a process that makes none)
    local seen = run([[
report("start")
assert(#wsup.hmac_sha256("key", "data") == 64)
report("hmac")
]])
    assert.same({ curl = false, mhd = false, crypto = false }, seen.start)
    assert.same({ curl = false, mhd = false, crypto = true }, seen.hmac)
  end)
end)
