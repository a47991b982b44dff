-- Coalescing: what one request carries when several patches are enqueued,
-- and the "1 in flight + 1 pending" bound.
local wsup = require "wsup"
local cjson = require "cjson"
local harness = require "support.harness"

local HOUR = harness.HOUR

describe("coalescing", function()
  -- recorder(opts, reply, hold_ms): an uploader whose send records (patch, json, time);
  -- `reply(n, patch)` picks the send result (default: delivered). `hold_ms` makes each send take that long.
  local H = harness.new()
  local recorder, track, keep = H.recorder, H.track, H.keep

  before_each(H.before)
  after_each(H.after)

  describe("a synchronous burst", function()
    it("does not call send inside enqueue", function()
      local up, sent = recorder()
      assert.is_true(up:enqueue({ worker_status = "idle" }))
      assert.equals(0, #sent)
      assert.equals(0, up:stats().attempts)
      wsup.run(HOUR)
      assert.equals(1, #sent)
    end)

    it("goes out as exactly one request carrying the coalesced patch", function()
      local up, sent = recorder()
      up:enqueue({ worker_status = "idle", external_metadata = { a = 1 } })
      up:enqueue({ worker_status = "busy" })
      up:enqueue({ external_metadata = { b = 2 }, internal_metadata = { c = 3 } })
      wsup.run(HOUR)
      assert.equals(1, #sent)
      local expected = { worker_status = "busy", external_metadata = { a = 1, b = 2 }, internal_metadata = { c = 3 } }
      assert.same(expected, sent[1].patch)
      assert.same(expected, cjson.decode(sent[1].json))
    end)

    it("inside a task also goes out as one request, on the next turn", function()
      local up, sent = recorder()
      local seen_inside
      wsup.spawn(function()
        up:enqueue({ worker_status = "a" })
        up:enqueue({ external_metadata = { k = "v" } })
        seen_inside = #sent
      end)
      wsup.run(HOUR)
      assert.equals(0, seen_inside)
      assert.equals(1, #sent)
      assert.same({ worker_status = "a", external_metadata = { k = "v" } }, sent[1].patch)
    end)

    it("starts the first send at the current time, without a delay", function()
      local up, sent = recorder({ base_delay_ms = 1000, jitter_ms = 1000 })
      up:enqueue({ worker_status = "idle" })
      wsup.run(HOUR)
      assert.equals(0, sent[1].t)
    end)
  end)

  describe("top-level keys", function()
    it("take the last value", function()
      local up, sent = recorder()
      up:enqueue({ worker_status = "idle", n = 1 })
      up:enqueue({ worker_status = "busy" })
      up:enqueue({ n = 3 })
      wsup.run(HOUR)
      assert.same({ worker_status = "busy", n = 3 }, sent[1].patch)
    end)

    it("replace a nested object under a non-merge key instead of merging it", function()
      local up, sent = recorder()
      up:enqueue({ state = { a = 1, b = 2 } })
      up:enqueue({ state = { c = 3 } })
      wsup.run(HOUR)
      assert.same({ state = { c = 3 } }, sent[1].patch)
    end)

    it("can be set to null, which the later patch carries as wsup.null", function()
      local up, sent = recorder()
      up:enqueue({ worker_status = "idle" })
      up:enqueue({ worker_status = wsup.null })
      wsup.run(HOUR)
      assert.equals(wsup.null, sent[1].patch.worker_status)
      assert.matches('"worker_status"%s*:%s*null', sent[1].json)
    end)
  end)

  describe("merge keys", function()
    it("merge external_metadata one level deep: new keys added, existing overwritten", function()
      local up, sent = recorder()
      up:enqueue({ external_metadata = { a = 1, b = 2 } })
      up:enqueue({ external_metadata = { b = 20, c = 30 } })
      wsup.run(HOUR)
      assert.same({ external_metadata = { a = 1, b = 20, c = 30 } }, sent[1].patch)
    end)

    it("merge internal_metadata by default too", function()
      local up, sent = recorder()
      up:enqueue({ internal_metadata = { a = 1 } })
      up:enqueue({ internal_metadata = { b = 2 } })
      wsup.run(HOUR)
      assert.same({ internal_metadata = { a = 1, b = 2 } }, sent[1].patch)
    end)

    it("keep null values as wsup.null so the server deletes them", function()
      local up, sent = recorder()
      up:enqueue({ external_metadata = { a = 1, b = 2 } })
      up:enqueue({ external_metadata = { a = wsup.null } })
      wsup.run(HOUR)
      assert.equals(wsup.null, sent[1].patch.external_metadata.a)
      assert.equals(2, sent[1].patch.external_metadata.b)
      local decoded = cjson.decode(sent[1].json)
      assert.equals(cjson.null, decoded.external_metadata.a)
      assert.equals(2, decoded.external_metadata.b)
    end)

    it("replace (do not merge) the second level inside a merge key", function()
      local up, sent = recorder()
      up:enqueue({ external_metadata = { x = { p = 1 }, y = 1 } })
      up:enqueue({ external_metadata = { x = { q = 2 } } })
      wsup.run(HOUR)
      assert.same({ external_metadata = { x = { q = 2 }, y = 1 } }, sent[1].patch)
    end)

    it("are replaced when the new value is not an object", function()
      local up, sent = recorder()
      up:enqueue({ external_metadata = { a = 1 }, internal_metadata = { b = 1 } })
      up:enqueue({ external_metadata = "flat", internal_metadata = wsup.null })
      wsup.run(HOUR)
      assert.equals("flat", sent[1].patch.external_metadata)
      assert.equals(wsup.null, sent[1].patch.internal_metadata)
    end)

    it("are replaced when the pending value is not an object", function()
      local up, sent = recorder()
      up:enqueue({ external_metadata = "flat", internal_metadata = wsup.null })
      up:enqueue({ external_metadata = { a = 1 }, internal_metadata = { b = 2 } })
      wsup.run(HOUR)
      assert.same({ external_metadata = { a = 1 }, internal_metadata = { b = 2 } }, sent[1].patch)
    end)

    it("are replaced when either side is an array", function()
      local up, sent = recorder()
      up:enqueue({ external_metadata = { "x", "y" }, internal_metadata = { a = 1 } })
      up:enqueue({ external_metadata = { a = 1 }, internal_metadata = { "z" } })
      wsup.run(HOUR)
      assert.same({ external_metadata = { a = 1 }, internal_metadata = { "z" } }, sent[1].patch)
    end)

    it("replace an object with an array, and reject a sparse or mixed table, under a merge key", function()
      local up, sent = recorder()
      up:enqueue({ external_metadata = { a = 1 } })
      up:enqueue({ external_metadata = { 1, 2, { x = 3 } } })
      assert.has_error(function() up:enqueue({ external_metadata = { [2] = "hole" } }) end,
        "external_metadata: key 2 is not a string")
      assert.has_error(function() up:enqueue({ external_metadata = { 1, k = 2 } }) end,
        "external_metadata: table mixes array items and other keys")
      -- the same when the string keys come first in traversal order (the item in the hash part)
      local mixed = { a = 1, b = 2, c = 3 }
      mixed[1] = "x"
      assert.has_error(function() up:enqueue({ external_metadata = mixed }) end,
        "external_metadata: table mixes array items and other keys")
      wsup.run(HOUR)
      assert.same({ external_metadata = { 1, 2, { x = 3 } } }, sent[1].patch)
      assert.equals('{"external_metadata":[1,2,{"x":3}]}', sent[1].json)
    end)

    it("treat an empty table as an object and merge with it", function()
      local up, sent = recorder()
      up:enqueue({ external_metadata = { a = 1 }, internal_metadata = {} })
      up:enqueue({ external_metadata = {}, internal_metadata = { b = 2 } })
      wsup.run(HOUR)
      assert.same({ external_metadata = { a = 1 }, internal_metadata = { b = 2 } }, sent[1].patch)
      assert.matches('"a"%s*:%s*1', sent[1].json)
    end)

    it("follow the merge_keys option instead of the defaults when given", function()
      local up, sent = recorder({ merge_keys = { "labels" } })
      up:enqueue({ labels = { a = 1 }, external_metadata = { x = 1 } })
      up:enqueue({ labels = { b = 2 }, external_metadata = { y = 2 } })
      wsup.run(HOUR)
      assert.same({ labels = { a = 1, b = 2 }, external_metadata = { y = 2 } }, sent[1].patch)
    end)

    it("can be disabled with an empty merge_keys list", function()
      local up, sent = recorder({ merge_keys = {} })
      up:enqueue({ external_metadata = { x = 1 } })
      up:enqueue({ external_metadata = { y = 2 } })
      wsup.run(HOUR)
      assert.same({ external_metadata = { y = 2 } }, sent[1].patch)
    end)
  end)

  describe("pending()", function()
    it("is nil when nothing is pending", function()
      local up = recorder()
      assert.is_nil(up:pending())
    end)

    it("shows the coalesced pending patch before it is sent", function()
      local up = recorder()
      up:enqueue({ worker_status = "idle", external_metadata = { a = 1 } })
      up:enqueue({ worker_status = "busy", external_metadata = { b = 2 } })
      assert.same({ worker_status = "busy", external_metadata = { a = 1, b = 2 } }, up:pending())
    end)

    it("returns a fresh copy that callers cannot use to change what is sent", function()
      local up, sent = recorder()
      up:enqueue({ worker_status = "idle", external_metadata = { a = 1 } })
      local p1 = up:pending()
      p1.worker_status = "tampered"
      p1.external_metadata.a = 999
      p1.extra = true
      local p2 = up:pending()
      assert.are_not.equal(p1, p2)
      assert.same({ worker_status = "idle", external_metadata = { a = 1 } }, p2)
      wsup.run(HOUR)
      assert.same({ worker_status = "idle", external_metadata = { a = 1 } }, sent[1].patch)
    end)

    it("is nil once the patch has been taken into the in-flight send", function()
      local up = recorder(nil, nil, 1000)
      up:enqueue({ worker_status = "idle" })
      wsup.run(10)
      assert.is_true(up:stats().inflight)
      assert.is_nil(up:pending())
    end)
  end)

  describe("while a send is in flight", function()
    it("coalesces later patches into one pending patch, sent right after success", function()
      local up, sent = recorder(nil, nil, 1000)
      up:enqueue({ worker_status = "a", external_metadata = { one = 1 } })
      wsup.run(10)
      assert.equals(1, #sent)
      up:enqueue({ worker_status = "b", external_metadata = { two = 2 } })
      up:enqueue({ external_metadata = { three = 3 } })
      up:enqueue({ worker_status = "c" })
      assert.same({ worker_status = "c", external_metadata = { two = 2, three = 3 } }, up:pending())
      wsup.run(HOUR)
      assert.equals(2, #sent)
      assert.same({ worker_status = "a", external_metadata = { one = 1 } }, sent[1].patch)
      assert.same({ worker_status = "c", external_metadata = { two = 2, three = 3 } }, sent[2].patch)
      assert.equals(1000, sent[2].t)
    end)

    it("never has more than one send running at a time", function()
      local running, max_running, calls = 0, 0, 0
      local up = wsup.uploader({
        send = function()
          calls = calls + 1
          running = running + 1
          if running > max_running then max_running = running end
          wsup.sleep(95)
          running = running - 1
          return calls % 3 ~= 0 -- every third attempt fails, to mix retries in
        end,
        base_delay_ms = 10, jitter_ms = 5,
      })
      track(up)
      local i = 0
      keep(wsup.every(7, function()
        i = i + 1
        up:enqueue({ worker_status = "s" .. i, external_metadata = { ["k" .. i % 5] = i } })
      end))
      wsup.run(2000)
      table.remove(H.handles):stop()
      assert.is_true(up:flush(HOUR))
      assert.is_true(calls > 10)
      assert.equals(1, max_running)
    end)

    it("sends a patch enqueued from inside send right after it", function()
      local up
      local sent = {}
      up = wsup.uploader({
        send = function(patch)
          sent[#sent + 1] = patch
          if #sent == 1 then
            assert(up:enqueue({ worker_status = "from-send" }) == true)
          end
          return true
        end,
      })
      track(up)
      up:enqueue({ worker_status = "first" })
      assert.is_true(up:flush(HOUR))
      assert.same({ { worker_status = "first" }, { worker_status = "from-send" } }, sent)
    end)

    it("counts only enqueues merged into an existing pending patch as coalesced", function()
      local up = recorder(nil, nil, 1000)
      up:enqueue({ worker_status = "a" })  -- becomes pending
      up:enqueue({ worker_status = "b" })  -- coalesced
      wsup.run(10)                         -- now in flight, nothing pending
      up:enqueue({ worker_status = "c" })  -- becomes pending
      up:enqueue({ worker_status = "d" })  -- coalesced
      up:enqueue({ worker_status = "e" })  -- coalesced
      local s = up:stats()
      assert.equals(5, s.enqueued)
      assert.equals(3, s.coalesced)
    end)
  end)
end)
