-- API.md "Conventions" (error objects, bad arguments), "Tasks" (errors
-- never retrieved) and "Precise semantics" (reported exactly once).
local lunio = require "lunio"
local h = require "helper"
local async = h.async

before_each(h.guard_default)
after_each(h.unguard_default)

describe("lunio error objects", function()
  it("are tables with kind and message, recognised by lunio.is_error", async(function()
    local t = lunio.create_task(lunio.sleep, 0.001)
    local err = h.catch(t.result, t)
    assert.is_table(err)
    assert.are.equal("invalid_state", err.kind)
    assert.is_string(err.message)
    assert.is_true(lunio.is_error(err))
    assert.is_true(lunio.is_error(err, "invalid_state"))
    assert.is_false(lunio.is_error(err, "cancelled"))
    t:await()
  end))

  it("print as 'kind: message'", async(function()
    local t = lunio.create_task(lunio.sleep, 1)
    lunio.sleep(0)
    t:cancel("enough")
    local err = h.catch(t.await, t)
    assert.are.equal("cancelled: enough", tostring(err):match("^[^\n]*"))
    local pending = lunio.create_task(lunio.sleep, 0)
    local e2 = h.catch(pending.result, pending)
    assert.are.equal("invalid_state: " .. e2.message, tostring(e2):match("^[^\n]*"))
    pending:await()
  end))

  it("are told apart from other values by lunio.is_error", function()
    assert.is_false(lunio.is_error("cancelled"))
    assert.is_false(lunio.is_error(nil))
    assert.is_false(lunio.is_error(42))
    assert.is_false(lunio.is_error({}, "cancelled"))
  end)
end)

describe("bad arguments", function()
  local cases = {
    { "run", "run", function() lunio.run(42) end },
    { "run", "run", function() lunio.run(nil) end },
    { "create_task", "create_task", function() lunio.create_task(42) end },
    { "create_task", "create_task", function() lunio.create_task({}) end },
    { "spawn", "spawn", function() lunio.spawn("f") end },
    { "sleep", "sleep", function() lunio.sleep("soon") end },
    { "sleep", "sleep", function() lunio.sleep(0 / 0) end },
    { "sleep", "sleep", function() lunio.sleep() end },
    { "sleep", "sleep", function() lunio.sleep({}) end },
  }
  for _, c in ipairs(cases) do
    it(("to %s give 'bad argument #1 to '%s'', outside and inside tasks"):format(c[1], c[2]),
      async(function()
        local pattern = "bad argument #1 to '" .. c[2] .. "'"
        local inside = h.errmsg(c[3])
        assert.truthy(inside:find(pattern, 1, true), inside)
        lunio.sleep(0.001) -- the loop is still fine
      end))
  end

  it("outside any loop leave lunio usable", function()
    for _, c in ipairs(cases) do
      local msg = h.errmsg(c[3])
      assert.truthy(msg:find("bad argument #1 to '" .. c[2] .. "'", 1, true), msg)
    end
    assert.are.equal("fine", lunio.run(function() lunio.sleep(0.001) return "fine" end))
  end)

  it("to Loop methods name the method and the argument", function()
    local loop = h.new_loop()
    local f = function() end
    local method_cases = {
      { "call_later", function() loop:call_later("x", f) end, 1 },
      { "call_later", function() loop:call_later(1, 42) end, 2 },
      { "call_later", function() loop:call_later(0 / 0, f) end, 1 },
      { "call_at", function() loop:call_at(nil, f) end, 1 },
      { "call_at", function() loop:call_at(1, "f") end, 2 },
      { "call_soon", function() loop:call_soon(42) end, 1 },
      { "create_task", function() loop:create_task(42) end, 1 },
      { "run", function() loop:run(42) end, 1 },
    }
    for _, c in ipairs(method_cases) do
      local msg = h.errmsg(c[2])
      local want = ("bad argument #%d to '%s'"):format(c[3], c[1])
      assert.truthy(msg:find(want, 1, true), want .. " in: " .. msg)
    end
    assert.are.equal(3, loop:run(function() lunio.sleep(0.001) return 3 end))
    loop:close()
  end)

  it("to Task methods name the method and the argument", async(function()
    local t = lunio.create_task(lunio.sleep, 0.001)
    local method_cases = {
      { "cancel", function() t:cancel({}) end },
      { "set_name", function() t:set_name({}) end },
      { "set_name", function() t:set_name() end },
      { "add_done_callback", function() t:add_done_callback(42) end },
      { "add_done_callback", function() t:add_done_callback() end },
    }
    for _, c in ipairs(method_cases) do
      local msg = h.errmsg(c[2])
      local want = ("bad argument #1 to '%s'"):format(c[1])
      assert.truthy(msg:find(want, 1, true), want .. " in: " .. msg)
    end
    assert.is_false(t:done())
    t:await()
    assert.is_true(t:done())
  end))

  it("when a method is called on the wrong object", async(function()
    local t = lunio.create_task(lunio.sleep, 0)
    local fake = { await = t.await, cancel = t.cancel, result = t.result }
    local method_calls = {
      { "await", function() return fake.await(fake) end },
      { "cancel", function() return fake.cancel(fake) end },
      { "result", function() return fake.result(fake) end },
    }
    for _, c in ipairs(method_calls) do
      local msg = h.errmsg(c[2])
      assert.truthy(msg:find("bad argument #1 to '" .. c[1] .. "'", 1, true), msg)
    end
    local msg = h.errmsg(function() return fake:await() end)
    assert.truthy(msg:find("calling 'await' on bad self", 1, true), msg)
    t:await()
  end))

  it("to set_exception_handler", function()
    local msg = h.errmsg(function() lunio.set_exception_handler(42) end)
    assert.truthy(msg:find("bad argument #1 to 'set_exception_handler'", 1, true), msg)
  end)
end)

describe("awaiting outside a running task", function()
  it("raises an error that says so (sleep from the main thread)", function()
    local msg = h.errmsg(lunio.sleep, 0)
    assert.matches("outside", msg)
    assert.matches("task", msg)
  end)
end)

describe("errors never retrieved", function()
  after_each(h.restore_handler)

  it("are reported once, when the run ends, with message/error/task/traceback", function()
    local e = { tag = "lost" }
    local reports = h.reports(e)
    local child
    lunio.run(function()
      child = lunio.create_task(function() lunio.sleep(0) error(e) end)
      lunio.sleep(0.002)
      assert.are.equal(0, #reports) -- not while someone could still look at it
    end)
    assert.are.equal(1, #reports)
    local ctx = reports[1]
    assert.is_string(ctx.message)
    assert.are.equal(e, ctx.error)
    assert.are.equal(child, ctx.task)
    assert.is_string(ctx.traceback)
    assert.truthy(ctx.traceback:find("stack traceback:", 1, true))
    collectgarbage("collect")
    collectgarbage("collect")
    lunio.run(lunio.sleep, 0)
    assert.are.equal(1, #reports)
  end)

  it("with a string error carry the traceback in ctx.traceback too", function()
    local reports = h.reports("string lost")
    local function fail_deep() error("string lost") end
    local keep
    lunio.run(function()
      keep = lunio.create_task(function() fail_deep() end)
      lunio.sleep(0.001)
    end)
    assert.are.equal(1, #reports)
    assert.matches("string lost", tostring(reports[1].error))
    assert.is_string(reports[1].traceback)
    assert.truthy(reports[1].traceback:find("fail_deep", 1, true))
    assert.is_true(keep:done())
  end)

  it("are reported when the failed task is collected, while the loop runs", async(function()
    local reports = h.reports("collected here")
    lunio.create_task(function() error("collected here") end)
    lunio.sleep(0.001)
    for _ = 1, 3 do collectgarbage("collect") end
    assert.are.equal(1, #reports)
    assert.is_not_nil(reports[1].task)
    assert.is_string(reports[1].message)
    lunio.sleep(0.001)
    for _ = 1, 3 do collectgarbage("collect") end
    assert.are.equal(1, #reports) -- exactly once
  end))

  it("are reported when the loop is closed", function()
    local reports = h.reports("closed over")
    local loop = h.new_loop()
    local t = loop:create_task(function() error("closed over") end)
    -- run a main task that does not look at t
    loop:run(lunio.sleep, 0.001)
    assert.is_true(t:done())
    loop:close()
    assert.are.equal(1, #reports)
    assert.are.equal(t, reports[1].task)
    collectgarbage("collect")
    assert.are.equal(1, #reports)
  end)

  for _, how in ipairs({ "await", "result", "error" }) do
    it(("are not reported once seen through task:%s()"):format(how), function()
      local reports = h.reports("seen-by-" .. how)
      local keep
      h.run(function() -- a fresh loop, closed afterwards: closing reports too
        keep = lunio.create_task(function() lunio.sleep(0) error("seen-by-" .. how) end)
        lunio.sleep(0.001)
        pcall(keep[how], keep)
      end)
      keep = nil
      collectgarbage("collect")
      collectgarbage("collect")
      assert.are.equal(0, #reports)
    end)
  end

  it("do not include the main task's error, which run raises", function()
    local reports = h.reports("main task error")
    assert.has_error(function() lunio.run(function() error("main task error") end) end)
    collectgarbage("collect")
    collectgarbage("collect")
    assert.are.equal(0, #reports)
  end)

  it("do not include cancelled tasks", function()
    local t
    local reports = h.reports(function(ctx) return ctx.task == t end)
    lunio.run(function()
      t = lunio.create_task(lunio.sleep, 1)
      lunio.sleep(0)
      t:cancel()
      lunio.sleep(0.001)
    end)
    collectgarbage("collect")
    assert.are.equal(0, #reports)
  end)

  it("reach a handler that raises without breaking the loop", function()
    local out, err, code = h.lua([[
      local lunio = require "lunio"
      lunio.set_exception_handler(function() error("handler broke") end)
      print(lunio.run(function()
        local keep = lunio.create_task(function() error("lost") end)
        lunio.get_running_loop():call_soon(function() error("cb") end)
        lunio.sleep(0.002)
        return "alive"
      end))
    ]])
    assert.are.equal(0, code, err)
    assert.matches("alive", out)
  end)

  it("go to stderr with their traceback by default, once", function()
    local _, stderr, code = h.lua([[
      local lunio = require "lunio"
      lunio.run(function()
        local function inner_failure() error("never looked at") end
        lunio.create_task(function() inner_failure() end)
        lunio.sleep(0.001)
      end)
      collectgarbage("collect")
      print("end")
    ]])
    assert.are.equal(0, code, stderr)
    local _, count = stderr:gsub("never looked at", "")
    assert.are.equal(1, count, stderr)
    assert.truthy(stderr:find("stack traceback:", 1, true), stderr)
    assert.truthy(stderr:find("inner_failure", 1, true), stderr)
  end)
end)
