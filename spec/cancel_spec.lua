-- API.md "Tasks" (task:cancel) and "Precise semantics": cancellation is an
-- error of kind "cancelled" raised at the await point, so pcall and <close>
-- cleanup run; pending tasks are strongly referenced by the loop.
local lunio = require "lunio"
local h = require "helper"
local async = h.async

local function closer(fn)
  return setmetatable({}, { __close = fn })
end

describe("task:cancel", function()
  it("returns true while the task is not done, false once it is", async(function()
    local t = lunio.create_task(lunio.sleep, 1)
    assert.is_true(t:cancel())
    assert.is_true(t:cancel()) -- still not done: the request is taken again
    pcall(t.await, t)
    assert.is_false(t:cancel())
    local ok = lunio.create_task(function() return 1 end)
    ok:await()
    assert.is_false(ok:cancel())
    assert.is_false(ok:cancelled())
    assert.are.equal(1, ok:result()) -- a late cancel changes nothing
  end))

  it("raises kind 'cancelled' at the await point, with msg as .message", async(function()
    local caught
    local t = lunio.create_task(function()
      local ok, err = pcall(lunio.sleep, 10)
      caught = err
      assert(not ok)
      error(err, 0)
    end)
    lunio.sleep(0)
    assert.is_true(t:cancel("stop now"))
    local err = h.catch(t.await, t)
    assert.is_true(lunio.is_error(caught, "cancelled"))
    assert.are.equal("stop now", caught.message)
    assert.is_true(lunio.is_error(err, "cancelled"))
    assert.are.equal("stop now", err.message)
    assert.is_true(t:cancelled())
  end))

  it("without msg still raises a 'cancelled' error with a message string", async(function()
    local t = lunio.create_task(lunio.sleep, 10)
    lunio.sleep(0)
    t:cancel()
    local err = h.catch(t.await, t)
    assert.is_true(lunio.is_error(err, "cancelled"))
    assert.is_string(err.message)
  end))

  it("before the first step: the body never runs", async(function()
    local ran = false
    local t = lunio.create_task(function() ran = true end)
    assert.is_true(t:cancel("early"))
    local err = h.catch(t.await, t)
    assert.is_false(ran)
    assert.is_true(t:cancelled())
    assert.are.equal("early", err.message)
  end))

  it("of itself is seen at the task's next await", async(function()
    local log = {}
    local t = lunio.create_task(function()
      log[#log + 1] = lunio.current_task():cancel("self")
      log[#log + 1] = "still running"
      local ok, err = pcall(lunio.sleep, 0)
      log[#log + 1] = ok
      log[#log + 1] = err.message
      error(err, 0)
    end)
    pcall(t.await, t)
    assert.are.same({ true, "still running", false, "self" }, log)
    assert.is_true(t:cancelled())
  end))

  it("caught by the task, lets it finish normally", async(function()
    local t = lunio.create_task(function()
      local ok, err = pcall(lunio.sleep, 10)
      assert(not ok and lunio.is_error(err, "cancelled"))
      lunio.sleep(0.001) -- awaiting again works and is not cancelled again
      return "recovered"
    end)
    lunio.sleep(0)
    t:cancel()
    assert.are.equal("recovered", t:await())
    assert.is_false(t:cancelled())
    assert.is_nil(t:error())
  end))

  it("reaches a task woken but not yet resumed (sleep(0)) at that await", async(function()
    local log = {}
    local t = lunio.create_task(function()
      log[#log + 1] = "before"
      lunio.sleep(0) -- cancelled while queued to resume from here
      log[#log + 1] = "after sleep(0)"
      lunio.sleep(0)
      log[#log + 1] = "after second sleep(0)"
    end)
    lunio.sleep(0) -- t runs up to its sleep(0) and is ready again
    assert.is_true(t:cancel())
    pcall(t.await, t)
    assert.is_true(t:cancelled())
    assert.are.same({ "before" }, log)
  end))

  it("reaches a task whose timer fired but which has not resumed yet", async(function()
    local log = {}
    local t = lunio.create_task(function()
      lunio.sleep(0.001)
      log[#log + 1] = "woke"
      lunio.sleep(0)
      log[#log + 1] = "ran on"
    end)
    lunio.sleep(0)
    -- busy-wait past t's deadline: the next libuv pass makes t ready, and a
    -- task queued behind it (in the same tick) cancels it before it runs
    local deadline = lunio.now() + 0.003
    while lunio.now() < deadline do end
    local canceller = lunio.create_task(function() t:cancel() end)
    lunio.sleep(0.001)
    pcall(t.await, t)
    canceller:await()
    assert.is_true(t:cancelled())
    assert.are.same({}, log)
  end))
end)

describe("cancellation cleanup", function()
  it("runs pcall handlers and code after them", async(function()
    local log = {}
    local t = lunio.create_task(function()
      local ok, err = pcall(function()
        lunio.sleep(10)
        log[#log + 1] = "not reached"
      end)
      log[#log + 1] = ok and "ok" or err.kind
      error(err, 0)
    end)
    lunio.sleep(0)
    t:cancel()
    pcall(t.await, t)
    assert.are.same({ "cancelled" }, log)
  end))

  it("runs <close> handlers, passing them the cancellation error", async(function()
    local got
    local t = lunio.create_task(function()
      local _ <close> = closer(function(_, err) got = err end)
      lunio.sleep(10)
    end)
    lunio.sleep(0)
    t:cancel("bye")
    pcall(t.await, t)
    assert.is_true(lunio.is_error(got, "cancelled"))
    assert.are.equal("bye", got.message)
  end))

  it("lets a <close> handler await during cancellation", async(function()
    local log = {}
    local t = lunio.create_task(function()
      local _ <close> = closer(function()
        log[#log + 1] = "close start"
        lunio.sleep(0.005)
        log[#log + 1] = "close end"
      end)
      lunio.sleep(10)
    end)
    lunio.sleep(0)
    t:cancel()
    local err = h.catch(t.await, t)
    assert.are.same({ "close start", "close end" }, log)
    assert.is_true(lunio.is_error(err, "cancelled"))
    assert.is_true(t:cancelled())
  end))

  it("lets nested <close> handlers await, innermost first", async(function()
    local log = {}
    local t = lunio.create_task(function()
      local _ <close> = closer(function() lunio.sleep(0.001) log[#log + 1] = "outer" end)
      local _ <close> = closer(function() lunio.sleep(0) log[#log + 1] = "inner" end)
      lunio.sleep(10)
    end)
    lunio.sleep(0)
    t:cancel()
    pcall(t.await, t)
    assert.are.same({ "inner", "outer" }, log)
    assert.is_true(t:cancelled())
  end))

  it("lets a <close> handler await when an error escapes the task body", async(function()
    local log = {}
    local t = lunio.create_task(function()
      local _ <close> = closer(function(_, err)
        lunio.sleep(0.005)
        log[#log + 1] = tostring(err):match("body failed") or "?"
      end)
      lunio.sleep(0)
      error("body failed")
    end)
    local err = h.catch(t.await, t)
    assert.are.same({ "body failed" }, log)
    assert.matches("body failed", err)
    assert.is_false(t:cancelled())
  end))

  it("lets a <close> handler await on a normal return", async(function()
    local log = {}
    local t = lunio.create_task(function()
      local _ <close> = closer(function() lunio.sleep(0.001) log[#log + 1] = "closed" end)
      return "value"
    end)
    assert.are.equal("value", t:await())
    assert.are.same({ "closed" }, log)
  end))
end)

describe("cancelling a task that awaits", function()
  it("another task cancels that task too", async(function()
    local log = {}
    local inner = lunio.create_task(function()
      local _ <close> = closer(function()
        lunio.sleep(0.002)
        log[#log + 1] = "inner cleanup"
      end)
      lunio.sleep(10)
    end)
    local outer = lunio.create_task(function()
      local _, err = pcall(inner.await, inner)
      log[#log + 1] = "outer resumed"
      error(err, 0)
    end)
    lunio.sleep(0)
    assert.is_true(outer:cancel("from test"))
    local err = h.catch(outer.await, outer)
    assert.is_true(inner:cancelled())
    assert.is_true(outer:cancelled())
    assert.is_true(lunio.is_error(err, "cancelled"))
    assert.are.equal("from test", err.message)
    -- the outer task waits for the inner one to finish cancelling
    assert.are.same({ "inner cleanup", "outer resumed" }, log)
  end))

  it("a Future cancels that Future too", async(function()
    local f = lunio.Future()
    local t = lunio.create_task(function() return f:await() end)
    lunio.sleep(0)
    t:cancel()
    local err = h.catch(t.await, t)
    assert.is_true(lunio.is_error(err, "cancelled"))
    assert.is_true(f:cancelled())
  end))

  it("a chain of tasks cancels the whole chain", async(function()
    local c = lunio.create_task(lunio.sleep, 10)
    local b = lunio.create_task(function() return c:await() end)
    local a = lunio.create_task(function() return b:await() end)
    lunio.sleep(0)
    a:cancel()
    pcall(a.await, a)
    assert.is_true(a:cancelled())
    assert.is_true(b:cancelled())
    assert.is_true(c:cancelled())
  end))

  it("does not disturb other awaiters of the same task beyond the cancellation", async(function()
    local target = lunio.create_task(lunio.sleep, 10)
    local a = lunio.create_task(function() return pcall(target.await, target) end)
    local b = lunio.create_task(function() return pcall(target.await, target) end)
    lunio.sleep(0)
    a:cancel()
    local ok_b, err_b = b:await()
    pcall(a.await, a)
    assert.is_false(ok_b)
    assert.is_true(lunio.is_error(err_b, "cancelled")) -- target was cancelled
    assert.is_true(target:cancelled())
  end))
end)

describe("pending tasks", function()
  it("are kept alive by the loop while nobody holds them", async(function()
    local finished = 0
    for i = 1, 20 do
      lunio.create_task(function()
        lunio.sleep(0.001 * (i % 3))
        local junk = {} -- garbage for the collector
        for j = 1, 100 do junk[j] = { j } end
        assert(#junk == 100)
        lunio.sleep(0.002)
        finished = finished + 1
      end)
    end
    for _ = 1, 5 do
      collectgarbage("collect")
      lunio.sleep(0.002)
    end
    while finished < 20 do
      collectgarbage("collect")
      lunio.sleep(0.001)
    end
    assert.are.equal(20, finished)
  end))

  it("keep a task that awaits another alive (weak holders everywhere)", async(function()
    local done = false
    local holder = setmetatable({}, { __mode = "v" })
    holder[1] = lunio.create_task(function()
      local inner = lunio.create_task(lunio.sleep, 0.005, "x")
      assert(inner:await() == "x")
      done = true
    end)
    lunio.sleep(0)
    collectgarbage("collect")
    collectgarbage("collect")
    lunio.sleep(0.01)
    collectgarbage("collect")
    while not done do lunio.sleep(0.001) end
    assert.is_true(done)
  end))
end)
