-- gather, wait, wait_for, shield and as_completed (lua/lunio/combinators.lua).
local lunio = require "lunio"
local core = require "lunio.core"
local async = lunio.testing.async

local settle = require("helper").settle

local function after(s, ...)
  local v = table.pack(...)
  return function()
    lunio.sleep(s)
    return table.unpack(v, 1, v.n)
  end
end

-- A task body failing after `s` seconds with a lunio error of kind "test"
-- whose message is `msg` (string errors would get a traceback appended).
local function fail_after(s, msg)
  return function()
    lunio.sleep(s)
    error(lunio.error("test", msg), 0)
  end
end

-- The message of a "test" error, else the kind of a lunio error.
local function kind_of(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error")
  if core.is_error(err, "test") then return err.message end
  return core.is_error(err) and err.kind or err
end

local function msg(err)
  return core.is_error(err, "test") and err.message or err
end

describe("lunio.gather (varargs)", function()
  it("returns the first result of each, in argument order", async(function()
    local fut = lunio.Future()
    local task = lunio.spawn(after(0.2, "t", "ignored"))
    lunio.spawn(function() lunio.sleep(0.1); fut:set_result("f") end)
    local a, b, c, d = lunio.gather(after(0.3, "a", "x"), task, fut, function() end)
    assert.equal("a", a)
    assert.equal("t", b)
    assert.equal("f", c)
    assert.is_nil(d)
    assert.equal(4, select("#", lunio.gather(after(0, 1), after(0, nil),
      after(0, 3), after(0, nil))))
  end, { virtual_time = true }))

  it("with no arguments returns nothing", async(function()
    assert.equal(0, select("#", lunio.gather()))
  end))

  it("raises the first error to happen; the others keep running",
    async(function()
      local slow_done = false
      local slow = lunio.spawn(function() lunio.sleep(2); slow_done = true end)
      local ok, err = lunio.pcall(lunio.gather, slow, fail_after(1, "late"),
        fail_after(0.5, "first"))
      assert.is_false(ok)
      assert.equal("first", msg(err))
      assert.is_false(slow:done())
      slow:await()
      assert.is_true(slow_done)
      local reports = {}
      lunio.get_running_loop():set_exception_handler(function(ctx)
        reports[#reports + 1] = ctx
      end)
      lunio.sleep(1) -- "late" fails too; gather retrieved its error
      collectgarbage()
      collectgarbage()
      assert.same({}, reports)
    end, { virtual_time = true }))

  it("raises when an argument is already done with an error", async(function()
    local t = lunio.spawn(fail_after(0, "boom"))
    settle()
    assert.equal("boom", kind_of(lunio.gather, t, after(0, 1)))
    settle()
  end))

  it("a cancelled child raises its cancellation", async(function()
    local t = lunio.spawn(lunio.sleep, 10)
    lunio.spawn(function() lunio.sleep(1); t:cancel("stop") end)
    local err = select(2, pcall(lunio.gather, t, after(0, 1)))
    assert.is_true(lunio.is_error(err, "cancelled"))
    assert.equal("stop", err.message)
  end, { virtual_time = true }))

  it("accepts the same task twice", async(function()
    local t = lunio.spawn(after(0.1, 7))
    assert.same({ 7, 7 }, { lunio.gather(t, t) })
  end, { virtual_time = true }))

  it("cancelling the caller cancels every child and waits for them",
    async(function()
      local cleaned = {}
      local function child(i)
        return function()
          local _, err = pcall(lunio.sleep, 10)
          lunio.sleep(0.5) -- cleanup takes a while
          cleaned[i] = true
          error(err, 0)
        end
      end
      local given = lunio.spawn(child(1))
      local caller = lunio.spawn(lunio.gather, given, child(2), child(3))
      lunio.sleep(1)
      caller:cancel("enough")
      local err = select(2, pcall(caller.await, caller))
      assert.is_true(lunio.is_error(err, "cancelled"))
      assert.equal("enough", err.message)
      assert.same({ true, true, true }, cleaned)
      assert.is_true(given:cancelled())
    end, { virtual_time = true }))

  it("rejects what it cannot wait for", async(function()
    assert.has_error(function() lunio.gather(after(0, 1), 42) end,
      "bad argument #2 to 'gather' (Task, Future or function expected, got number)")
    settle()
  end))
end)

describe("lunio.gather (list)", function()
  it("returns a list with .n, keeping nil results in place", async(function()
    local r = lunio.gather({ after(0.2, "a"), after(0.1, nil), after(0, "c") })
    assert.equal(3, r.n)
    assert.equal("a", r[1])
    assert.is_nil(r[2])
    assert.equal("c", r[3])
    assert.same({ n = 0 }, lunio.gather({}))
  end, { virtual_time = true }))

  it("return_errors puts error values in the list", async(function()
    local c = lunio.spawn(lunio.sleep, 10)
    lunio.spawn(function() lunio.sleep(0.5); c:cancel() end)
    local r = lunio.gather({ after(1, "ok"), fail_after(0.2, "bad"), c },
      { return_errors = true })
    assert.equal("ok", r[1])
    assert.equal("bad", msg(r[2]))
    assert.is_true(lunio.is_error(r[3], "cancelled"))
  end, { virtual_time = true }))

  it("raises the first error without return_errors", async(function()
    local ok, err = lunio.pcall(lunio.gather, { after(1, 1), fail_after(0.1, "x") })
    assert.is_false(ok)
    assert.equal("x", msg(err))
    lunio.sleep(1)
  end, { virtual_time = true }))

  it("checks its arguments", async(function()
    assert.has_error(function() lunio.gather({ 1 }) end,
      "bad argument #1 to 'gather' (element 1 is not a Task, Future or function (number))")
    assert.has_error(function() lunio.gather({}, 5) end,
      "bad argument #2 to 'gather' (table expected, got number)")
  end))
end)

describe("lunio.wait", function()
  it("all_completed (default) returns done and pending lists", async(function()
    local a, b = lunio.spawn(after(0.1, 1)), lunio.spawn(fail_after(0.2, "x"))
    local done, pending = lunio.wait({ a, b })
    assert.same({ a, b }, done)
    assert.same({}, pending)
    assert.equal("x", msg(b:error()))
  end, { virtual_time = true }))

  it("first_completed returns after the first task", async(function()
    local a, b = lunio.spawn(after(1, 1)), lunio.spawn(after(0.1, 2))
    local done, pending = lunio.wait({ a, b }, { return_when = "first_completed" })
    assert.same({ b }, done)
    assert.same({ a }, pending)
    assert.is_false(a:done()) -- not cancelled
    a:await()
  end, { virtual_time = true }))

  it("first_error returns at the first failure, or when all are done",
    async(function()
      local a = lunio.spawn(after(5, 1))
      local b = lunio.spawn(fail_after(1, "x"))
      local c = lunio.spawn(after(0.5, 3))
      local done, pending = lunio.wait({ a, b, c }, { return_when = "first_error" })
      assert.same({ b, c }, done)
      assert.same({ a }, pending)
      b:error()
      done, pending = lunio.wait({ a, c }, { return_when = "first_error" })
      assert.same({ a, c }, done)
      assert.same({}, pending)
    end, { virtual_time = true }))

  it("timeout returns what is done; nothing raises, nothing is cancelled",
    async(function()
      local a, b = lunio.spawn(after(10, 1)), lunio.spawn(fail_after(0.1, "x"))
      local t0 = lunio.now()
      local done, pending = lunio.wait({ a, b }, { timeout = 1 })
      assert.near(1, lunio.now() - t0, 0.01)
      assert.same({ b }, done)
      assert.same({ a }, pending)
      b:error()
      done, pending = lunio.wait({ a }, { timeout = 0 }) -- does not wait
      assert.same({}, done)
      assert.same({ a }, pending)
      assert.equal(0, lunio.get_running_loop():scheduled_handles())
      a:cancel()
      settle()
    end, { virtual_time = true }))

  it("an empty list returns two empty lists; bad options raise", async(function()
    local done, pending = lunio.wait({})
    assert.same({}, done)
    assert.same({}, pending)
    assert.has_error(function() lunio.wait({}, { return_when = "soon" }) end)
    assert.has_error(function() lunio.wait({}, { timeout = "1" }) end)
    assert.has_error(function() lunio.wait(nil) end)
  end))

  it("a cancelled caller leaves the tasks running", async(function()
    local a = lunio.spawn(after(1, "a"))
    local w = lunio.spawn(lunio.wait, { a })
    settle()
    w:cancel()
    settle()
    assert.is_true(w:cancelled())
    assert.is_false(a:done())
    assert.equal("a", a:await())
  end, { virtual_time = true }))
end)

describe("lunio.wait_for", function()
  it("returns every result of the task", async(function()
    assert.same({ 1, 2, 3 }, { lunio.wait_for(after(0.5, 1, 2, 3), 1) })
    assert.same({ "f" }, { lunio.wait_for(lunio.spawn(after(0, "f")), nil) })
    assert.equal(0, lunio.get_running_loop():scheduled_handles())
  end, { virtual_time = true }))

  it("on expiry cancels the task, waits for its cleanup, raises timeout",
    async(function()
      local cleaned = false
      local t = lunio.spawn(function()
        local _, err = pcall(lunio.sleep, 10)
        lunio.sleep(0.5)
        cleaned = true
        error(err, 0)
      end)
      local t0 = lunio.now()
      local err = select(2, lunio.pcall(lunio.wait_for, t, 1))
      assert.is_true(lunio.is_error(err, "timeout"))
      assert.is_true(cleaned)
      assert.is_true(t:cancelled())
      assert.near(1.5, lunio.now() - t0, 0.01)
    end, { virtual_time = true }))

  it("raises timeout even if the task swallows its cancellation",
    async(function()
      local t = lunio.spawn(function()
        pcall(lunio.sleep, 10)
        return "swallowed"
      end)
      assert.equal("timeout", kind_of(lunio.wait_for, t, 1))
      assert.equal("swallowed", t:result())
    end, { virtual_time = true }))

  it("passes the task's own error through", async(function()
    assert.equal("bad", kind_of(lunio.wait_for, fail_after(0.1, "bad"), 1))
  end, { virtual_time = true }))

  it("cancelling the caller cancels the task", async(function()
    local t = lunio.spawn(lunio.sleep, 10)
    local w = lunio.spawn(lunio.wait_for, t, 5)
    settle()
    w:cancel()
    settle()
    assert.is_true(w:cancelled())
    assert.is_true(t:cancelled())
    assert.equal(0, lunio.get_running_loop():scheduled_handles())
  end, { virtual_time = true }))

  it("a Future is cancelled on expiry", async(function()
    local f = lunio.Future()
    assert.equal("timeout", kind_of(lunio.wait_for, f, 0.1))
    assert.is_true(f:cancelled())
  end, { virtual_time = true }))

  it("checks its arguments", async(function()
    assert.has_error(function() lunio.wait_for(1, 1) end)
    assert.has_error(function() lunio.wait_for(after(0), "1") end)
    assert.has_error(function() lunio.wait_for(after(0), 0 / 0) end)
  end))
end)

describe("lunio.shield", function()
  it("returns the task's results", async(function()
    assert.same({ 1, 2 }, { lunio.shield(after(0.1, 1, 2)) })
    assert.equal("bad", kind_of(lunio.shield, fail_after(0.1, "bad")))
  end, { virtual_time = true }))

  it("cancelling the awaiter does not cancel the shielded task",
    async(function()
      local inner = lunio.spawn(after(1, "inner"))
      local outer = lunio.spawn(lunio.shield, inner)
      lunio.sleep(0.5)
      outer:cancel()
      settle()
      assert.is_true(outer:cancelled())
      assert.is_false(inner:done())
      assert.equal("inner", inner:await())
    end, { virtual_time = true }))

  it("a cancelled shielded task cancels the awaiter", async(function()
    local inner = lunio.spawn(lunio.sleep, 10)
    local outer = lunio.spawn(lunio.shield, inner)
    settle()
    inner:cancel("x")
    local err = select(2, pcall(outer.await, outer))
    assert.is_true(lunio.is_error(err, "cancelled"))
  end, { virtual_time = true }))
end)

describe("lunio.as_completed", function()
  it("yields the tasks in completion order", async(function()
    local order = {}
    local done = lunio.spawn(after(0, "d"))
    settle()
    for t in lunio.as_completed({ after(0.3, "c"), after(0.1, "a"), done, after(0.2, "b") }) do
      order[#order + 1] = t:result()
    end
    assert.same({ "d", "a", "b", "c" }, order)
    for _ in lunio.as_completed({}) do error("nothing to yield") end
  end, { virtual_time = true }))

  it("raises timeout when the next task is late", async(function()
    local slow = lunio.spawn(after(10, "slow"))
    local got = {}
    local ok, err = pcall(function()
      for t in lunio.as_completed({ after(0.5, "fast"), slow }, 1) do
        got[#got + 1] = t:result()
      end
    end)
    assert.is_false(ok)
    assert.is_true(lunio.is_error(err, "timeout"))
    assert.same({ "fast" }, got)
    assert.is_false(slow:done()) -- not cancelled
    slow:cancel()
    settle()
    assert.equal(0, lunio.get_running_loop():scheduled_handles())
  end, { virtual_time = true }))

  it("breaking out of the loop leaves nothing behind", async(function()
    local a, b = lunio.spawn(after(0.1, 1)), lunio.spawn(after(1, 2))
    for t in lunio.as_completed({ a, b }, 5) do -- luacheck: ignore 512
      assert.equal(a, t)
      break
    end
    assert.equal(0, lunio.get_running_loop():scheduled_handles())
    b:await()
  end, { virtual_time = true }))

  it("rejects bad arguments", async(function()
    assert.has_error(function() lunio.as_completed(5) end)
    assert.has_error(function() lunio.as_completed({}, "x") end)
  end))
end)
