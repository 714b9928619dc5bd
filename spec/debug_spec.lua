-- API.md "Command line": LUNIO_DEBUG=1 turns on debug mode: a warning for
-- any step that holds the loop longer than 100 ms (LUNIO_DEBUG_SLOW sets
-- the threshold), the creation site of tasks, and a report of what is still
-- open when the loop closes. loop:set_debug(on [, seconds]) does the same
-- for one loop.
local lunio = require "lunio"
local h = require "helper"

local function busy(seconds)
  local t0 = os.clock()
  while os.clock() - t0 < seconds do end
end

describe("debug mode", function()
  after_each(h.restore_handler)

  it("warns about a step that holds the loop, with the task's name", function()
    local reports = h.reports(function(ctx)
      return tostring(ctx.message):find("Executing", 1, true) ~= nil
    end)
    local loop = h.new_loop()
    loop:set_debug(true, 0.05)
    loop:run(function()
      local t = lunio.spawn(function()
        lunio.sleep(0)
        busy(0.08) -- blocks every other task
        lunio.sleep(0.01)
      end)
      t:set_name("hog")
      lunio.spawn(function() lunio.sleep(0) end):await() -- a quick one: no report
      t:await()
    end)
    loop:close()
    assert.are.equal(1, #reports)
    assert.matches("Executing hog took 0%.%d+ seconds", reports[1].message)
    assert.matches("waiting at", reports[1].traceback)
    assert.matches("debug_spec", reports[1].traceback, 1, true)
    assert.matches("debug_spec.lua", reports[1].created_at, 1, true)
  end)

  it("is off by default: no warnings, no creation sites", function()
    local reports = h.reports(function(ctx)
      return tostring(ctx.message):find("Executing", 1, true) ~= nil
    end)
    local loop = h.new_loop()
    assert.is_false((loop:debug()))
    loop:run(function()
      local t = lunio.spawn(busy, 0.12)
      t:await()
      assert.is_nil(t:created_at())
    end)
    loop:close()
    assert.are.equal(0, #reports)
  end)

  it("records where each task was created", function()
    local loop = h.new_loop()
    loop:set_debug(true)
    local where = loop:run(function()
      local t = lunio.spawn(function() end)
      t:await()
      return t:created_at()
    end)
    loop:close()
    assert.matches("stack traceback", where, 1, true)
    assert.matches("debug_spec.lua:%d+", where)
  end)

  it("adds the creation site to a never-retrieved error's report", function()
    local reports = h.reports("boom")
    local loop = h.new_loop()
    loop:set_debug(true)
    loop:run(function()
      lunio.spawn(error, "boom")
      lunio.sleep(0)
      lunio.sleep(0)
    end)
    loop:close()
    assert.are.equal(1, #reports)
    assert.matches("debug_spec.lua", reports[1].created_at, 1, true)
  end)

  it("reports tasks still pending when a loop is collected", function()
    local _, err, code = h.lua([[
      local lunio = require "lunio"
      local loop = lunio.new_loop()
      loop:set_signals(false)
      pcall(loop.run, loop, function()
        lunio.spawn(function() lunio.sleep(10) end):set_name("sleeper")
        lunio.sleep(0)
        lunio.get_running_loop():stop()
        lunio.sleep(10)
      end)
      loop = nil
      collectgarbage(); collectgarbage()
    ]], nil, { env = { LUNIO_DEBUG = "1" } })
    assert.are.equal(0, code, err)
    assert.matches("the loop closed with 2 task%(s%) pending", err)
    assert.matches("sleeper waiting at", err, 1, true)
  end)

  it("LUNIO_DEBUG=1 and LUNIO_DEBUG_SLOW set every new loop", function()
    local out, err, code = h.lua([[
      local lunio = require "lunio"
      print(lunio.new_loop():debug())
    ]], nil, { env = { LUNIO_DEBUG = "1", LUNIO_DEBUG_SLOW = "0.25" } })
    assert.are.equal(0, code, err)
    assert.are.equal("true\t0.25\n", out)
  end)
end)
