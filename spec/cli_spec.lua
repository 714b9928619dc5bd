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

describe("lunio.run inside the lunio command's main task", function()
  it("runs fn in place: returns every result, nils included, args passed", function()
    local out, err, code = h.lunio({ "-e", [[
      local t0 = lunio.current_task()
      print(lunio.run(function(...)
        assert(lunio.current_task() == t0, "not in place")
        lunio.sleep(0.01)
        return select("#", ...), ...
      end, 1, nil, 3))
      print(select("#", lunio.run(function() end)))
      local obj = setmetatable({}, { __call = function(_, x) return x * 2 end })
      print(lunio.run(obj, 21))
    ]] })
    assert.equal(0, code, err)
    assert.equal("3\t1\tnil\t3\n0\n42\n", out)
  end)

  it("raises fn's error, the same value, catchable in the script", function()
    local out, err, code = h.lunio({ "-e", [[
      local e = { kind = "mine", message = "x" }
      local ok, got = pcall(lunio.run, function() lunio.sleep(0) error(e) end)
      print(ok, got == e)
    ]] })
    assert.equal(0, code, err)
    assert.equal("false\ttrue\n", out)
  end)

  it("leaves tasks spawned by fn running, as the script's own tasks", function()
    local out, err, code = h.lunio({ "-e", [[
      local t = lunio.run(function() return lunio.spawn(lunio.sleep, 0.01, "bg") end)
      print(t:await())
    ]] })
    assert.equal(0, code, err)
    assert.equal("bg\n", out)
  end)

  it("in any other task raises an error pointing at the script's line", function()
    local _, err, code = h.lunio({ "-e", "\nlunio.spawn(function() lunio.run(print) end):await()" })
    assert.equal(1, code)
    assert.matches("^lunio: %(command line%):2: lunio.run: a loop is already running", err)
  end)

  it("makes a script for lua5.4 run the same under lunio", function()
    local script = [[
      local lunio = require "lunio"
      print(lunio.run(function(a) lunio.sleep(0.01) return a .. "!" end, arg[1]))
    ]]
    local path = os.tmpname() .. ".lua"
    local f = assert(io.open(path, "w"))
    f:write(script)
    f:close()
    local out1, err1, code1 = h.lua(path, { "hi" })
    local out2, err2, code2 = h.lunio({ path, "hi" })
    os.remove(path)
    assert.equal(0, code1, err1)
    assert.equal(0, code2, err2)
    assert.equal("hi!\n", out1)
    assert.equal(out1, out2)
  end)
end)

describe("the lunio command without a script", function()
  it("reads the script from standard input when it is not a terminal", function()
    local out, err, code = h.lunio({}, { stdin = [[
      lunio.sleep(0.01)
      print("from stdin", arg[0], select("#", ...))
    ]] })
    assert.equal(0, code, err)
    assert.equal("from stdin\t-\t0\n", out)
  end)

  it("reports a failing script from standard input like any script", function()
    local _, err, code = h.lunio({}, { stdin = "\nerror('bad input')" })
    assert.equal(1, code)
    assert.matches("^lunio: stdin:2: bad input\n", err)
  end)

  it("says so in -h", function()
    local out, _, code = h.lunio({ "-h" })
    assert.equal(0, code)
    assert.matches("REPL", out)
    assert.matches("read from\nstandard input", out)
  end)
end)
