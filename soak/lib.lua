-- Helpers shared by the soak scripts (loaded with dofile; run from the repository root).
local wsup = require "wsup"

local M = {}
local null = wsup.null
local MERGE = { external_metadata = true, internal_metadata = true }

-- ---- values ----

local function is_object(v) -- as the receiver sees it: a table that is not a non-empty sequence
  return type(v) == "table" and (next(v) == nil or v[1] == nil)
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = copy(x) end
  return t
end

-- Deep equality; wsup.null only equals itself. Returns true, or false and a key path.
function M.same(a, b, path)
  path = path or "$"
  if type(a) ~= "table" or type(b) ~= "table" then
    if a == b then return true end
    return false, path
  end
  for k, v in pairs(a) do
    local ok, where = M.same(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, where end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) end
  end
  return true
end

-- The receiver's rule (receiver.c rcv_fold): top-level keys replace; under a merge key an
-- object merges one level deep, a null member deletes, and a non-object stored value
-- is replaced by the object minus its null members.
function M.fold(state, patch)
  for k, v in pairs(patch) do
    if MERGE[k] and is_object(v) then
      local dst = state[k]
      if not is_object(dst) then
        dst = {}
        state[k] = dst
      end
      for mk, mv in pairs(v) do
        if mv == null then dst[mk] = nil else dst[mk] = copy(mv) end
      end
    else
      state[k] = copy(v)
    end
  end
  return state
end

-- ---- patches ----

local STATUSES = { "idle", "busy", "error", "draining" }
local MKEYS = { "step", "note", "gpu", "mem", "job", "eta", "host", "tags", "cfg", "rate", "owner", "ttl" }

-- A random value for a metadata member: integers (big ones too), floats, strings,
-- booleans, arrays, nested objects (replaced whole), or null (deletes the member).
local function member(rnd, seq)
  local c = rnd(10)
  if c == 1 then return null end
  if c == 2 then return rnd(1 << 40) * 4096 + seq end
  if c == 3 then return rnd() end
  if c == 4 then return "v" .. seq .. string.rep("x", rnd(0, 40)) end
  if c == 5 then return rnd(2) == 1 end
  if c == 6 then return { seq, "a", rnd(100) } end
  if c == 7 then return { n = seq, inner = { deep = rnd(9) } } end
  return seq
end

-- Patch number seq (1-based) for one uploader; rnd is math.random-like. Every patch
-- carries seq, so the last delivered body names the last patch. With mixed, merge keys
-- sometimes get a non-object value (a string or null), which the receiver stores as
-- is and a later object replaces.
function M.patch(rnd, seq, mixed)
  local p = { seq = seq }
  if rnd(3) == 1 then p.worker_status = STATUSES[rnd(#STATUSES)] end
  for _, mk in ipairs { "external_metadata", "internal_metadata" } do
    if rnd(mk == "external_metadata" and 2 or 5) == 1 then
      if mixed and rnd(8) == 1 then
        p[mk] = rnd(2) == 1 and null or ("flat-" .. seq)
      else
        local md = {}
        for _ = 1, rnd(0, 3) do md[MKEYS[rnd(#MKEYS)]] = member(rnd, seq) end
        p[mk] = md
      end
    end
  end
  local c = rnd(12)
  if c == 1 then p.progress = rnd() end
  if c == 2 then p.blob = { a = seq, b = { c = "d" } } end -- not a merge key: replaced whole
  if c == 3 then p.gone = null end                           -- a top-level null is kept as null
  if c == 4 then p.list = { seq, seq + 1 } end
  return p
end

-- ---- memory ----

function M.vmrss_kib()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local kib = f:read("a"):match("VmRSS:%s*(%d+)")
  f:close()
  return tonumber(kib)
end

local function median(t, i, j)
  local s = {}
  for k = i, j do s[#s + 1] = t[k] end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

-- Samples VmRSS (and the Lua heap, in KiB) every ms until stop().
function M.rss_sampler(ms)
  local s = { samples = {}, lua = {} }
  s.timer = wsup.every(ms, function()
    s.samples[#s.samples + 1] = M.vmrss_kib()
    s.lua[#s.lua + 1] = collectgarbage("count")
  end)
  function s.stop() s.timer:stop() end
  return s
end

-- Writes "ms vmrss_kib lua_kib" lines to path (a plot or a closer look); false if it cannot.
function M.save_samples(path, s, every_ms)
  local f = path and io.open(path, "w")
  if not f then return false end
  for i, v in ipairs(s.samples) do f:write(("%d %d %.0f\n"):format(i * every_ms, v, s.lua[i])) end
  f:close()
  return true
end

-- The medians of k equal slices of samples, as "a b c ..." (whole KiB): the shape over time.
function M.timeline(samples, k)
  local out, n = {}, #samples
  for i = 1, math.min(k, n) do
    local from, to = (i - 1) * n // k + 1, i * n // k
    out[#out + 1] = ("%.0f"):format(median(samples, from, to))
  end
  return table.concat(out, " ")
end

-- The verdict on samples: the first warm fraction is dropped, the rest cut in thirds;
-- flat when median(last third) <= median(first third) * (1 + tol) + slack_kib.
function M.rss_verdict(samples, warm, tol, slack_kib)
  local n = #samples
  local from = math.floor(n * warm) + 1
  local m = n - from + 1
  local r = { n = n, peak = 0 }
  for _, v in ipairs(samples) do r.peak = math.max(r.peak, v) end
  if m < 6 then
    r.flat, r.why = false, "too few samples (" .. n .. ")"
    return r
  end
  r.first = median(samples, from, from + m // 3 - 1)
  r.last = median(samples, n - m // 3 + 1, n)
  r.growth_pct = (r.last - r.first) * 100 / r.first
  r.limit = r.first * (1 + tol) + slack_kib
  r.flat = r.last <= r.limit
  return r
end

-- ---- output ----

-- Prints "name=value" lines (the shell driver reads them), sorted by name.
function M.report(prefix, t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = t[k]
    if math.type(v) == "float" then v = v == math.floor(v) and ("%d"):format(v) or ("%.1f"):format(v) end
    io.write(prefix, k, "=", tostring(v), "\n")
  end
  io.flush()
end

-- Sums the numeric stats of a list of uploaders.
-- Flushes every uploader in turn, each for at most ms; how many drained.
function M.flush_all(ups, ms)
  local flushed = 0
  for _, up in ipairs(ups) do
    if up:flush(ms) then flushed = flushed + 1 end
  end
  return flushed
end

function M.sum_stats(ups)
  local sum = {}
  for _, up in ipairs(ups) do
    for k, v in pairs(up:stats()) do
      if math.type(v) == "integer" and k ~= "next_attempt_at" and k ~= "last_status" then
        sum[k] = (sum[k] or 0) + v
      end
    end
  end
  return sum
end

-- Collects the pass conditions of a soak: verdict.check(cond, what) records each
-- failure; verdict.ok stays true while none has failed.
function M.verdict()
  local v = { ok = true, fails = {} }
  function v.check(cond, what)
    if not cond then
      v.ok = false
      v.fails[#v.fails + 1] = what
    end
  end
  return v
end

return M
