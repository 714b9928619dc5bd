-- In debug mode, a task whose first step held the loop past the threshold
-- and returned no value stayed "running" for ever: the slow-step report
-- popped the task from the runner's stack, and the loop could not finish.
-- Turning debug mode on inside a step also timed that step from a stale
-- start ("took 8262 seconds"). Found by the API fuzzer of issue 14.
local h = require "helper"

-- Each case runs in a child: before the fix, its loop never finished.
describe("regress: debug mode's slow-step report", function()
  it("leaves a slow task that returns nothing done, and the loop finishes", function()
    local out, err, code = h.lua([[
      local lunio = require "lunio"
      local slow, traceback = 0, false
      lunio.set_exception_handler(function(ctx)
        if tostring(ctx.message):find("Executing Task", 1, true) then
          slow = slow + 1
          traceback = traceback or ctx.traceback ~= nil
        end
      end)
      local loop = lunio.new_loop()
      loop:set_debug(true, 0.02)
      print(loop:run(function()
        local t = lunio.spawn(function()
          local t0 = os.clock()
          while os.clock() - t0 < 0.05 do end
        end)
        lunio.sleep(0.01)
        return t:state()
      end))
      loop:close()
      print(slow, traceback)
    ]], {}, { timeout = 10 })
    assert.are.equal(0, code, err)
    -- done; one report, without a "waiting at" traceback (the body returned)
    assert.are.equal("done\n1\tfalse\n", out)
  end)

  it("times a step from when debug mode was turned on", function()
    local out, err, code = h.lua([[
      local lunio = require "lunio"
      local slow = 0
      lunio.set_exception_handler(function(ctx)
        if tostring(ctx.message):find("Executing Task", 1, true) then slow = slow + 1 end
      end)
      print(lunio.run(function()
        local loop = lunio.get_running_loop()
        local t = lunio.spawn(function() loop:set_debug(true, 0.5) end)
        lunio.sleep(0.01)
        loop:set_debug(false)
        return t:state()
      end), slow)
    ]], {}, { timeout = 10 })
    assert.are.equal(0, code, err)
    assert.are.equal("done\t0\n", out)
  end)
end)
