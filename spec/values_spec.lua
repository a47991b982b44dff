-- Values: what reaches send (table and JSON text), exactness of numbers,
-- string escaping, rejection of bad input, and snapshotting at enqueue.
local wsup = require "wsup"
local cjson = require "cjson"
local harness = require "support.harness"

local HOUR = harness.HOUR

describe("values", function()
  local H = harness.new()
  local recorder, track = H.recorder, H.track

  -- Send one patch and return what send received.
  local function roundtrip(patch)
    local up, sent = recorder()
    assert.is_true(up:enqueue(patch))
    assert.is_true(up:flush(HOUR))
    assert.equals(1, #sent)
    return sent[1].patch, sent[1].json
  end

  -- The number literal that follows "key": in the JSON text.
  local function number_text(json, key)
    return json:match('"' .. key .. '"%s*:%s*(%-?[%d%.eE%+%-]+)')
  end

  before_each(H.before)
  after_each(H.after)

  it("writes JSON numbers whatever the process's LC_NUMERIC (a multi-byte decimal point too)", function()
    local cli = require "support.cli"
    local dir = cli.tmp(".loc")
    if not os.execute(("mkdir -p %s && localedef -i ps_AF -f UTF-8 %s/ps_AF.UTF-8 2>/dev/null"):format(dir, dir)) then
      pending("localedef could not build ps_AF.UTF-8 here")
      return
    end
    local r = cli.run(("env LOCPATH=%s %s %s"):format(dir, cli.WSUP, cli.script([[
local wsup = require "wsup"
assert(os.setlocale("ps_AF.UTF-8", "numeric"), "locale")
local json
local up = wsup.uploader { send = function(_, j) json = j; return true end }
up:enqueue { a = 0.1, b = 1.5e300, c = -2.25 }
up:flush(1000)
io.write(json, "\n")
assert(up:enqueue_json('{"d":0.5}')) -- jansson's own number parsing, too
up:flush(1000)
io.write(json)
]])))
    os.execute("rm -rf " .. dir)
    assert.equal(0, r.rc, r.err)
    local first, second = r.out:match("^(.-)\n(.*)$")
    assert.same({ a = 0.1, b = 1.5e300, c = -2.25 }, cjson.decode(first))
    assert.same({ d = 0.5 }, cjson.decode(second))
  end)

  it("takes a string holding NUL, from a table or from JSON text, and sends it as \\u0000", function()
    local _, json = roundtrip { s = "a\0b" }
    assert.equals('{"s":"a\\u0000b"}', json)
    local up, sent = recorder()
    assert.is_true(up:enqueue_json('{"s":"a\\u0000b"}'))
    assert.is_true(up:flush(HOUR))
    assert.equals("a\0b", sent[1].patch.s)
  end)

  it("says 'not a JSON object' for JSON text that is valid but not an object", function()
    local up = track(wsup.uploader { send = function() return true end })
    for _, text in ipairs { "1", '"x"', "null", "[1]" } do
      local ok, err = up:enqueue_json(text)
      assert.is_nil(ok, text)
      assert.equals("not a JSON object", err, text)
    end
  end)

  it("wsup.null is cjson.null", function()
    assert.equals(cjson.null, wsup.null)
  end)

  describe("integers", function()
    it("appear verbatim in the JSON text", function()
      local _, json = roundtrip({
        max = math.maxinteger, min = math.mininteger,
        big = 123456789012345678, mid = 123456789012345, zero = 0, neg = -42,
      })
      assert.equals("9223372036854775807", number_text(json, "max"))
      assert.equals("-9223372036854775808", number_text(json, "min"))
      assert.equals("123456789012345678", number_text(json, "big"))
      assert.equals("123456789012345", number_text(json, "mid"))
      assert.equals("0", number_text(json, "zero"))
      assert.equals("-42", number_text(json, "neg"))
      assert.is_nil(json:find("e+", 1, true))
      assert.is_nil(json:find("E+", 1, true))
    end)

    it("stay exact inside merge keys and arrays, also after coalescing", function()
      local up, sent = recorder()
      up:enqueue({ external_metadata = { a = math.maxinteger }, list = { 1 } })
      up:enqueue({ external_metadata = { b = 123456789012345678 }, list = { 123456789012345, math.mininteger } })
      up:flush(HOUR)
      local json = sent[1].json
      assert.is_not_nil(json:find("9223372036854775807", 1, true))
      assert.is_not_nil(json:find("123456789012345678", 1, true))
      assert.is_not_nil(json:match("%[%s*123456789012345%s*,%s*%-9223372036854775808%s*%]"))
    end)

    it("reach send as Lua integers", function()
      local patch = roundtrip({ max = math.maxinteger, big = 123456789012345678, list = { 7 } })
      assert.equals("integer", math.type(patch.max))
      assert.equals(math.maxinteger, patch.max)
      assert.equals(123456789012345678, patch.big)
      assert.equals("integer", math.type(patch.list[1]))
    end)
  end)

  describe("floats", function()
    local floats = {
      { "tenth", 0.1, "0.1" }, { "sum", 0.1 + 0.2, "0.1 + 0.2" }, { "third", 1 / 3, "1/3" },
      { "neg", -2.5, "-2.5" }, { "huge", 1e300, "1e300" }, { "tiny", 5e-324, "5e-324 (subnormal)" },
      { "pow", 2.0 ^ 53, "2.0^53" }, { "whole", 3.0, "3.0" }, { "pi", math.pi, "math.pi" },
    }
    for _, case in ipairs(floats) do
      local key, value, label = case[1], case[2], case[3]
      it("round-trip through the JSON text exactly: " .. label, function()
        local patch, json = roundtrip({ [key] = value })
        local text = number_text(json, key)
        assert.is_not_nil(text, "no number for " .. key .. " in " .. json)
        assert.equals(value, tonumber(text))
        assert.equals(value, patch[key])
      end)
    end
  end)

  describe("strings", function()
    it("escape every control character and round-trip", function()
      local s = "a\nb\tc\rd\0e\1f\31g\"h\\i\127/"
      local patch, json = roundtrip({ text = s })
      assert.is_nil(json:find("[\0-\31]"), "raw control character in JSON text")
      assert.equals(s, cjson.decode(json).text)
      assert.equals(s, patch.text)
    end)

    it("pass valid multi-byte UTF-8 through unchanged", function()
      local s = "h\u{E9}llo \u{2713} \u{1F600} \u{65E5}\u{672C}"
      local patch, json = roundtrip({ text = s })
      assert.equals(s, cjson.decode(json).text)
      assert.equals(s, patch.text)
    end)

    it("reject an invalid byte at any position of a string of 1 to 24 bytes, in values and keys", function()
      -- Short strings are checked a word at a time; a bad byte must be found wherever it falls.
      local up = recorder()
      local rejected, checked = 0, 0
      for n = 1, 24 do
        for at = 1, n do
          local s = ("a"):rep(at - 1) .. "\xff" .. ("b"):rep(n - at)
          checked = checked + 2
          if not pcall(up.enqueue, up, { text = s }) then rejected = rejected + 1 end
          if not pcall(up.enqueue, up, { [s] = 1 }) then rejected = rejected + 1 end
        end
        assert.is_true(up:enqueue({ text = ("\u{E9}"):rep(n) }), "valid 2-byte characters, " .. n)
      end
      assert.equals(checked, rejected)
      assert.same({ text = ("\u{E9}"):rep(24) }, up:pending())
    end)

    it("escape keys as well", function()
      local key = 'we"ird\\key\n'
      local patch, json = roundtrip({ [key] = 1 })
      assert.equals(1, cjson.decode(json)[key])
      assert.equals(1, patch[key])
    end)
  end)

  describe("structure", function()
    it("sends booleans, null, arrays and objects as such", function()
      local patch, json = roundtrip({
        yes = true, no = false, gone = wsup.null,
        list = { "a", 2, false }, obj = { k = "v" }, nested = { { x = 1 }, { 2, 3 } },
      })
      local expected = {
        yes = true, no = false, gone = wsup.null,
        list = { "a", 2, false }, obj = { k = "v" }, nested = { { x = 1 }, { 2, 3 } },
      }
      assert.same(expected, patch)
      assert.same(expected, cjson.decode(json))
      assert.matches('"list"%s*:%s*%[', json)
      assert.matches('"gone"%s*:%s*null', json)
    end)

    it("sends an empty table as the object {}", function()
      local patch, json = roundtrip({ meta = {} })
      assert.matches('"meta"%s*:%s*{%s*}', json)
      assert.same({}, patch.meta)
    end)

    it("accepts the same table referenced twice (shared is not a cycle)", function()
      local shared = { a = 1 }
      local patch = roundtrip({ x = shared, y = { shared, shared } })
      assert.same({ x = { a = 1 }, y = { { a = 1 }, { a = 1 } } }, patch)
    end)

    it("accepts moderate nesting (16 levels)", function()
      local t = { leaf = true }
      for _ = 1, 15 do t = { d = t } end
      local patch = roundtrip({ deep = t })
      local node = patch.deep
      for _ = 1, 15 do node = node.d end
      assert.is_true(node.leaf)
    end)

    it("gives send a fresh table, not the one enqueued", function()
      local original = { worker_status = "idle", external_metadata = { a = 1 } }
      local patch = roundtrip(original)
      assert.are_not.equal(original, patch)
      assert.are_not.equal(original.external_metadata, patch.external_metadata)
      assert.same(original, patch)
    end)
  end)

  describe("snapshot at enqueue", function()
    it("ignores changes made to the table after enqueue", function()
      local up, sent = recorder()
      local t = { worker_status = "idle", external_metadata = { a = 1 }, list = { 1, 2 } }
      up:enqueue(t)
      t.worker_status = "changed"
      t.external_metadata.a = 2
      t.external_metadata.b = 3
      t.list[3] = 3
      t.extra = true
      up:flush(HOUR)
      assert.same({ worker_status = "idle", external_metadata = { a = 1 }, list = { 1, 2 } }, sent[1].patch)
      assert.same({ worker_status = "idle", external_metadata = { a = 1 }, list = { 1, 2 } },
        cjson.decode(sent[1].json))
    end)

    it("ignores changes to a table enqueued while another send is in flight", function()
      local sent = {}
      local up = wsup.uploader({
        send = function(patch)
          sent[#sent + 1] = patch
          wsup.sleep(100)
          return true
        end,
      })
      track(up)
      up:enqueue({ worker_status = "first" })
      wsup.run(10)
      local md = { a = 1 }
      up:enqueue({ external_metadata = md })
      md.a = "changed"
      md.b = "added"
      up:flush(HOUR)
      assert.equals(2, #sent)
      assert.same({ external_metadata = { a = 1 } }, sent[2])
    end)
  end)

  describe("bad input", function()
    local function sparse()
      local t = {}
      t[1], t[3] = "a", "c"
      return t
    end
    local function nest(levels)
      local t = {}
      for _ = 2, levels do t = { d = t } end
      return t
    end
    local function cycle()
      local t = { name = "x" }
      t.again = t
      return t
    end
    local function array_cycle()
      local a = {}
      a[1] = a
      return a
    end

    -- { description, patch builder, substring the message must contain (or nil) }
    local cases = {
      { "a string instead of a table", function() return "worker_status" end },
      { "nil instead of a table", function() return nil end },
      { "a number instead of a table", function() return 42 end },
      { "an array at top level", function() return { "a", "b" } end },
      { "a number key at top level", function() return { worker_status = "new", [1] = "y" } end },
      { "a boolean key at top level", function() return { worker_status = "new", [true] = 1 } end },
      { "a number key inside an object",
        function() return { worker_status = "new", external_metadata = { ok = 1, [2] = "y" } } end,
        "external_metadata" },
      { "a table key inside an object",
        function() return { worker_status = "new", external_metadata = { [{}] = 1 } } end, "external_metadata" },
      { "a float key", function() return { worker_status = "new", labels = { [1.5] = 1 } } end, "labels" },
      { "a sparse array", function() return { worker_status = "new", tags = sparse() } end, "tags" },
      { "a function value",
        function() return { worker_status = "new", external_metadata = { keep = 2, task = function() end } } end,
        "external_metadata.task" },
      { "a function inside an array",
        function() return { worker_status = "new", internal_metadata = { list = { 1, print } } } end,
        "internal_metadata.list" },
      { "a userdata value", function() return { worker_status = "new", handle = io.stdout } end, "handle" },
      { "a thread value",
        function() return { worker_status = "new", worker = coroutine.create(print) } end, "worker" },
      { "a cycle through an object", function() return { worker_status = "new", cyclic = cycle() } end, "cyclic" },
      { "a cycle through an array", function() return { worker_status = "new", ring = array_cycle() } end, "ring" },
      { "nesting 1000 levels deep", function() return { worker_status = "new", deep = nest(1000) } end, "deep" },
      { "NaN", function() return { worker_status = "new", ratio = 0 / 0 } end, "ratio" },
      { "+inf", function() return { worker_status = "new", ratio = math.huge } end, "ratio" },
      { "-inf", function() return { worker_status = "new", ratio = -math.huge } end, "ratio" },
      { "NaN inside an array", function() return { worker_status = "new", samples = { 1, 0 / 0 } } end, "samples" },
      { "invalid UTF-8 (\\xff)", function() return { worker_status = "new", bad_text = "ok\xff" } end, "bad_text" },
      { "invalid UTF-8 (lone continuation byte)",
        function() return { worker_status = "new", bad_text = "\x80abc" } end, "bad_text" },
      { "invalid UTF-8 (truncated sequence)",
        function() return { worker_status = "new", bad_text = "x\xe2\x82" } end, "bad_text" },
      { "invalid UTF-8 (overlong encoding)",
        function() return { worker_status = "new", bad_text = "\xc0\xaf" } end, "bad_text" },
      { "invalid UTF-8 in a top-level key", function() return { worker_status = "new", ["k\xff"] = 1 } end },
      { "invalid UTF-8 in a nested key",
        function() return { worker_status = "new", external_metadata = { ["k\xff"] = 1 } } end,
        "external_metadata.k\\xff: key is not valid UTF-8" },
      -- JSON can say "\u0000" in a key, but servers' parsers (jansson's among them) refuse
      -- it, and the whole coalesced payload would then be dropped.
      { "a NUL byte in a top-level key", function() return { worker_status = "new", ["a\0b"] = 1 } end,
        "a\\x00b: key contains a NUL byte" },
      { "a NUL byte in a merge key's key",
        function() return { worker_status = "new", external_metadata = { ok = 1, ["a\0b"] = 1 } } end,
        "external_metadata.a\\x00b: key contains a NUL byte" },
      { "a NUL byte in a key of an object in an array",
        function() return { worker_status = "new", list = { { ["\0"] = 1 } } } end,
        "list[1].\\x00: key contains a NUL byte" },
    }

    for _, case in ipairs(cases) do
      local what, build, path = case[1], case[2], case[3]
      local name = "rejects " .. what .. (path and (", naming " .. path) or "")
        .. ", leaving pending and stats unchanged"
      it(name, function()
        local up, sent = recorder()
        up:enqueue({ worker_status = "orig", external_metadata = { keep = 1 } })
        local pending_before, stats_before = up:pending(), up:stats()
        local ok, err = pcall(up.enqueue, up, build())
        assert.is_false(ok, "enqueue accepted " .. what)
        if path then
          assert.matches(path, tostring(err), 1, true)
        end
        assert.same(pending_before, up:pending())
        assert.same(stats_before, up:stats())
        -- the uploader still works and sends only the good patch
        assert.is_true(up:enqueue({ external_metadata = { later = 2 } }))
        assert.is_true(up:flush(HOUR))
        assert.equals(1, #sent)
        assert.same({ worker_status = "orig", external_metadata = { keep = 1, later = 2 } }, sent[1].patch)
      end)
    end

    it("keeps the reason, one line and valid UTF-8 in the message however long the path", function()
      local up = recorder()
      local function message(patch)
        local ok, err = pcall(up.enqueue, up, patch)
        assert.is_false(ok)
        err = tostring(err)
        assert.is_true(#err <= 511, "message of " .. #err .. " bytes")
        assert.is_truthy(utf8.len(err), "message is not valid UTF-8: " .. err)
        assert.is_nil(err:find("[%c]"), "control character in: " .. err)
        return err
      end
      local deep = {}
      for _ = 1, 120 do deep = { node = deep } end
      local m = message { state = deep }
      assert.matches("^state%.node%.node.*%.%.%..*node%.node: nesting deeper than 100 levels$", m)
      m = message { [("k"):rep(600)] = 0 / 0 }
      assert.matches("^kkk.*%.%.%.: cannot encode NaN$", m)
      m = message { external_metadata = { [("é"):rep(300)] = print } }
      assert.matches("^external_metadata%.éé.*%.%.%.: cannot encode a function$", m)
      assert.equals("k\\x0a: cannot encode a function", message { ["k\n"] = print })
      assert.equals("k\\xff\\xfe: key is not valid UTF-8", message { ["k\xff\xfe"] = 1 })
      -- C1 controls (NEL is a line break to some tools) and the Unicode line separators too
      assert.equals("k\\xc2\\x85x\\xe2\\x80\\xa8: cannot encode a function", message { ["k\u{85}x\u{2028}"] = print })
      assert.equals("é\\xc2\\x9b: cannot encode a function", message { ["é\u{9b}"] = print })
      assert.is_nil(up:pending())
    end)

    it("into an empty uploader leaves nothing pending and sends nothing", function()
      local up, sent = recorder()
      assert.has_error(function() up:enqueue({ worker_status = "new", f = print }) end)
      assert.is_nil(up:pending())
      local s = up:stats()
      assert.is_false(s.pending)
      assert.equals(0, s.enqueued)
      wsup.run(HOUR)
      assert.equals(0, #sent)
    end)
  end)
end)
