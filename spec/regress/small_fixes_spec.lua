-- Smaller defects found in the same review of src/:
-- * core.wake with more than 65,535 values wrapped a 16-bit count;
-- * the watchdog cast a huge number of seconds to uint64_t (undefined);
-- * a loop's close could block for ever on a handle left active (now every
--   handle is closed; debug mode reports what was left);
-- * messages went to stderr with fprintf, out of the host's reach (now
--   through the exception handler).
local lunio = require "lunio"
local core = require "lunio.core"
local h = require "helper"
local async = h.async

describe("regress: small fixes", function()
  it("core.wake refuses more values than a task can take", async(function()
    local me = lunio.current_task()
    local t = lunio.spawn(function() return core.park() end)
    lunio.sleep(0)
    local many = {}
    for i = 1, 70000 do many[i] = i end
    local err = h.errmsg(core.wake, t, table.unpack(many))
    assert.matches("too many values", err, 1, true)
    assert.is_true(core.wake(t, 1, 2, 3))
    assert.are.same({ true, 1, 2, 3 }, { t:await() })
    assert.are.equal(me, lunio.current_task())
  end))

  it("a watchdog of 1e300 s or math.huge never fires and is safe", async(function()
    local loop = lunio.get_running_loop()
    for _, s in ipairs({ 1e300, math.huge, -1e300 }) do
      local fired = false
      loop:set_watchdog(s, function() fired = true end)
      lunio.sleep(0.001)
      loop:set_watchdog(nil)
      assert.are.equal(s < 0, fired)
    end
    assert.matches("NaN", h.errmsg(loop.set_watchdog, loop, 0 / 0, print))
  end))

  it("closing a loop with an open HTTP session closes it; debug mode says so",
    function()
      local reports = h.reports(function(ctx)
        return tostring(ctx.message):find("resource", 1, true) ~= nil
      end)
      local loop = lunio.new_loop()
      loop:set_debug(true)
      local session
      loop:run(function()
        session = lunio.http.Session()
        -- bind it to the loop without a server: a refused connection
        pcall(session.get, session, "http://127.0.0.1:1/")
      end)
      assert.are.equal(1, loop:open_resources())
      loop:close()
      h.restore_handler()
      assert.are.equal(1, #reports)
      assert.matches("1 resource%(s%) open", reports[1].message)
    end)
end)
