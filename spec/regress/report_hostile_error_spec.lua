-- An exception handler that raised an error value whose __tostring raises
-- made the report's fallback message raise in the middle of a tick: run()
-- ended with that unrelated error and the loop served nothing more; the
-- default handler dropped a report of such a value without a word. Found
-- by the fault specs of issue 14: reports now format error values in
-- protected mode.
local h = require "helper"

local PRELUDE = [[
local lunio = require "lunio"
local hostile = setmetatable({}, { __tostring = function() error("tostring boom") end })
]]

describe("regress: reports of error values that cannot be printed", function()
  it("a handler raising one: the report still goes out, the loop goes on", function()
    local out, err, code = h.lua(PRELUDE .. [[
      lunio.set_exception_handler(function() error(hostile) end)
      lunio.run(function()
        do lunio.spawn(error, "lost") end
        lunio.sleep(0)
        collectgarbage()
        collectgarbage()
        lunio.sleep(0)
        print(lunio.spawn(function() return "served" end):await())
      end)
    ]])
    assert.are.equal(0, code, err)
    assert.are.equal("served\n", out)
    assert.matches("error in the exception handler: (a table whose __tostring failed)", err, 1,
      true)
    assert.matches("never retrieved", err, 1, true)
    assert.matches("lost", err, 1, true)
  end)

  it("the default handler names what it cannot print", function()
    local out, err, code = h.lua(PRELUDE .. [[
      lunio.run(function()
        do lunio.spawn(error, hostile) end
        lunio.sleep(0)
        collectgarbage()
        collectgarbage()
        lunio.sleep(0)
        print("served")
      end)
    ]])
    assert.are.equal(0, code, err)
    assert.are.equal("served\n", out)
    assert.matches("never retrieved", err, 1, true)
    assert.matches("(a table whose __tostring failed)", err, 1, true)
  end)
end)
