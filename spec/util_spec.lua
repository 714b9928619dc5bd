-- lunio.util.format_error: the one formatter of error values on the Lua
-- side (the lunio command's report, TaskGroup messages, the REPL).
local lunio = require "lunio"
local util = require "lunio.util"

local format_error = util.format_error

local with_tostring = setmetatable({}, { __tostring = function() return "custom!" end })
local bad_tostring = setmetatable({}, { __tostring = function() error("nope") end })

describe("util.format_error", function()
  local cases = {
    { "a string as it is", "x.lua:1: boom", "x.lua:1: boom" },
    { "a lunio error by its __tostring", lunio.error("timeout", "too slow"), "timeout: too slow" },
    { "a lunio error with its traceback",
      lunio.error("closed", "gone", { traceback = "stack traceback:\n\tx.lua:2: in f" }),
      "closed: gone\nstack traceback:\n\tx.lua:2: in f" },
    { "a plain table with kind and message", { kind = "mine", message = "hello" }, "mine: hello" },
    { "a plain table with kind, message and traceback",
      { kind = "mine", message = "hello", traceback = "stack traceback:\n\t[C]: in ?" },
      "mine: hello\nstack traceback:\n\t[C]: in ?" },
    { "a plain table with a message only", { message = "just this" }, "just this" },
    { "a table with __tostring by it", with_tostring, "custom!" },
    { "nil", nil, "nil" },
    { "a number", 42, "42" },
    { "false", false, "false" },
  }
  for _, c in ipairs(cases) do
    it("formats " .. c[1], function()
      assert.equal(c[3], format_error(c[2]))
    end)
  end

  it("formats a table without kind/message as tostring does", function()
    local t = { code = 3 }
    assert.equal(tostring(t), format_error(t))
  end)

  it("does not take a non-string kind or message for a lunio-like error", function()
    local t = { kind = 1, message = {} }
    assert.equal(tostring(t), format_error(t))
  end)

  it("never raises, even when __tostring does", function()
    local s = format_error(bad_tostring)
    assert.matches("^%(error object that cannot be printed: .*nope%)$", s)
  end)
end)
