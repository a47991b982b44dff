-- Shared set-up for specs that drive uploaders and loop handles in-process: each test
-- starts on a fresh clock, and every uploader and handle it registers is closed or
-- stopped afterwards, with the loop drained. Busted's before_each/after_each are not
-- visible from a required module, so a spec hooks the harness in itself:
--
--   local harness = require "support.harness"
--   describe("...", function()
--     local H = harness.new()          -- or harness.new { clock = "real", drain_ms = 2000 }
--     local recorder, track, keep = H.recorder, H.track, H.keep
--     before_each(H.before)
--     after_each(H.after)
local wsup = require "wsup"

local M = {}

-- Bound for loop runs in virtual time, so that a broken implementation fails instead of hanging.
M.HOUR = 3600 * 1000

-- opts.clock: the clock each test starts on ("virtual", the default, or "real");
-- opts.drain_ms: how long after_each runs the loop once everything is closed (default HOUR).
function M.new(opts)
  opts = opts or {}
  local clock = opts.clock or "virtual"
  local drain_ms = opts.drain_ms or M.HOUR
  -- H.ups and H.handles are fresh tables in every test: read them through H.
  local H = { ups = {}, handles = {} }

  -- Registers an uploader to be closed after the test; returns it.
  function H.track(up)
    H.ups[#H.ups + 1] = up
    return up
  end

  -- Registers a timer (or any handle with :stop()) to be stopped after the test; returns it.
  function H.keep(h)
    H.handles[#H.handles + 1] = h
    return h
  end

  -- A tracked uploader whose send records { patch =, json =, t = wsup.now() } in `sent`,
  -- takes hold_ms (if given), and returns what reply(n, patch) returns (n = attempt
  -- number, from 1; every result is passed through), or true without reply.
  -- opts go to wsup.uploader (send is set here). Returns the uploader and `sent`.
  function H.recorder(uopts, reply, hold_ms)
    local sent = {}
    uopts = uopts or {}
    uopts.send = function(patch, json)
      sent[#sent + 1] = { patch = patch, json = json, t = wsup.now() }
      if hold_ms then wsup.sleep(hold_ms) end
      if reply then return reply(#sent, patch) end
      return true
    end
    return H.track(wsup.uploader(uopts)), sent
  end

  function H.before()
    wsup.clock(clock)
    H.ups, H.handles = {}, {}
  end

  function H.after()
    for _, h in ipairs(H.handles) do h:stop() end
    for _, up in ipairs(H.ups) do up:close() end
    wsup.run(drain_ms)
    -- Collect what the test left (closed uploaders, records) now, so that it does not
    -- shape the heap of later tests: memory_spec measures RSS growth.
    collectgarbage("collect")
  end

  return H
end

return M
