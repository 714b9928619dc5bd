-- Arguments that lunio's Lua code did not check, found by the API fuzzer
-- of issue 14: they failed inside lunio with "attempt to call a string
-- value (local 'predicate')", "attempt to compare number with table",
-- "attempt to index a number value (local 'opts')" instead of the
-- "bad argument" errors the contract promises for programmer errors.
local lunio = require "lunio"
local h = require "helper"

describe("regress: argument checks", function()
  it("Condition:wait_for wants a callable", h.async(function()
    local cond = lunio.Condition()
    local _ <close> = cond:acquire()
    for _, v in ipairs({ "x", 1, {}, true }) do
      assert.matches("bad argument #1 to 'wait_for' (callable expected, got " .. type(v) .. ")",
        h.errmsg(cond.wait_for, cond, v), 1, true)
    end
    assert.matches("got nil", h.errmsg(cond.wait_for, cond), 1, true)
    assert.are.equal(7, cond:wait_for(setmetatable({}, { __call = function() return 7 end })))
  end))

  it("Condition:notify wants a number", h.async(function()
    local cond = lunio.Condition()
    local _ <close> = cond:acquire()
    assert.matches("bad argument #1 to 'notify' (number expected, got table)",
      h.errmsg(cond.notify, cond, {}), 1, true)
    cond:notify(2)
    cond:notify()
  end))

  it("lunio.testing.async wants a table of options", function()
    assert.matches("bad argument #2 to 'async' (table expected, got number)",
      h.errmsg(lunio.testing.async, function() end, 5), 1, true)
    assert.is_function(lunio.testing.async(function() end, nil))
  end)

  it("lunio.dump_tasks wants a Loop", h.async(function()
    local f = io.open("/dev/null")
    for _, v in ipairs({ lunio.current_task(), f, 3 }) do
      assert.matches("bad argument #1 to 'dump_tasks' (lunio.Loop expected",
        h.errmsg(lunio.dump_tasks, v), 1, true)
    end
    f:close()
    assert.matches("task%(s%)", lunio.dump_tasks(lunio.get_running_loop()))
  end))
end)
