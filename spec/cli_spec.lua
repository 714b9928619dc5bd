-- The lunio command (bin/lunio, lua/lunio/cli.lua): running scripts and
-- strings, exit statuses, and how it reports errors.
local h = require "helper"

describe("the lunio command reports a failing script", function()
  it("with a lunio error as 'kind: message' and its traceback, exit 1", function()
    local out, err, code = h.lunio({ "-e", "lunio.sleep(0.01) error(lunio.error('mine', 'bad'))" })
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("^lunio: mine: bad\nstack traceback:\n", err)
    assert.matches("%(command line%):1: in main chunk", err)
  end)

  it("with a plain table error's kind and message, not 'table: 0x...'", function()
    local _, err, code = h.lunio({ "-e", "error({ kind = 'oops', message = 'plain table' })" })
    assert.equal(1, code)
    assert.matches("^lunio: oops: plain table\nstack traceback:\n", err)
    assert.is_nil(err:find("table: 0x", 1, true))
  end)

  it("with a string error and its traceback", function()
    local _, err, code = h.lunio({ "-e", "local x = nil; x()" })
    assert.equal(1, code)
    assert.matches("^lunio: %(command line%):1: attempt to call a nil value", err)
    assert.matches("stack traceback:", err)
  end)

  it("with a failing task group's errors, each with its traceback", function()
    local _, err, code = h.lunio({ "-e", [[
      local tg <close> = lunio.TaskGroup()
      tg:spawn(function() lunio.sleep(0.01) error({ kind = "first", message = "one" }) end)
      tg:spawn(function() lunio.sleep(0.01) error("two") end)
    ]] })
    assert.equal(1, code)
    assert.matches("^lunio: task_group: 2 error%(s%) in the task group\n", err)
    assert.matches("\n  %[1%] first: one\n      stack traceback:\n", err)
    assert.matches("\n  %[2%] %(command line%):3: two\n      stack traceback:\n", err)
  end)
end)
