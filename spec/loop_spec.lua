-- API.md "Loop object": run, time, call_soon/call_later/call_at, handles,
-- create_task, stop, is_running, close; and the scheduler's timing.
local lunio = require "lunio"
local h = require "helper"
local async = h.async

before_each(h.guard_default)
after_each(h.unguard_default)

describe("loop:run", function()
  it("has lunio.run's contract on this loop", function()
    local loop = h.new_loop()
    local r = table.pack(loop:run(function(a) return a, nil, lunio.get_running_loop() end, "x"))
    assert.are.equal(3, r.n)
    assert.are.equal("x", r[1])
    assert.are.equal(loop, r[3])
    local err = h.catch(loop.run, loop, function() lunio.sleep(0) error("inner") end)
    assert.matches("inner", err)
    assert.truthy(err:find("stack traceback:", 1, true))
    loop:close()
  end)

  it("can run the same loop several times", function()
    local loop = h.new_loop()
    local t = loop:create_task(function() return "queued" end)
    assert.are.equal(1, loop:run(function() return 1 end))
    assert.are.equal("queued", t:result())
    assert.are.equal(2, loop:run(function() lunio.sleep(0.001) return 2 end))
    loop:close()
  end)
end)

describe("loop:time", function()
  it("is monotonic and follows sleeps", async(function()
    local loop = lunio.get_running_loop()
    local a = loop:time()
    assert.is_number(a)
    lunio.sleep(0.01)
    local b = loop:time()
    assert.is_true(b - a >= 0.01)
    assert.is_true(math.abs(lunio.now() - b) < 0.5)
  end))
end)

describe("loop:call_soon", function()
  it("calls fn(...) after the current task yields, in order, outside tasks", async(function()
    local loop = lunio.get_running_loop()
    local log = {}
    local h1 = loop:call_soon(function(a, b, c)
      log[#log + 1] = { "one", a, b, c, lunio.current_task() }
    end, 1, nil, 3)
    loop:call_soon(function() log[#log + 1] = { "two" } end)
    assert.is_not_nil(h1)
    assert.are.equal(0, #log)
    lunio.sleep(0)
    assert.are.equal(2, #log)
    assert.are.same({ "one", 1, nil, 3, nil }, log[1])
    assert.are.same({ "two" }, log[2])
  end))

  it("accepts callable tables", async(function()
    local loop = lunio.get_running_loop()
    local got
    loop:call_soon(setmetatable({}, { __call = function(_, x) got = x end }), "arg")
    lunio.sleep(0)
    assert.are.equal("arg", got)
  end))

  it("returns a handle whose cancel() prevents the call", async(function()
    local loop = lunio.get_running_loop()
    local called = false
    local handle = loop:call_soon(function() called = true end)
    handle:cancel()
    lunio.sleep(0)
    lunio.sleep(0.001)
    assert.is_false(called)
  end))

  it("queues calls made before the loop runs", function()
    local loop = h.new_loop()
    local got
    loop:call_soon(function(v) got = v end, "early")
    loop:run(lunio.sleep, 0)
    loop:close()
    assert.are.equal("early", got)
  end)
end)

describe("loop:call_later / loop:call_at", function()
  it("call fn(...) after the delay, earliest first", async(function()
    local loop = lunio.get_running_loop()
    local log = {}
    local t0 = loop:time()
    loop:call_later(0.02, function(x) log[#log + 1] = { x, loop:time() - t0 } end, "late")
    loop:call_later(0.005, function(x) log[#log + 1] = { x, loop:time() - t0 } end, "early")
    lunio.sleep(0.04)
    assert.are.equal(2, #log)
    assert.are.equal("early", log[1][1])
    assert.are.equal("late", log[2][1])
    assert.is_true(log[1][2] >= 0.005)
    assert.is_true(log[2][2] >= 0.02)
  end))

  it("call_at runs fn(...) at a loop time", async(function()
    local loop = lunio.get_running_loop()
    local at
    local when = loop:time() + 0.01
    loop:call_at(when, function(a, b) at = { loop:time(), a, b } end, "a", "b")
    lunio.sleep(0.03)
    assert.is_not_nil(at)
    assert.is_true(at[1] >= when)
    assert.are.same({ "a", "b" }, { at[2], at[3] })
  end))

  it("call_at with a time in the past runs soon", async(function()
    local loop = lunio.get_running_loop()
    local ran = false
    loop:call_at(loop:time() - 10, function() ran = true end)
    lunio.sleep(0.001)
    assert.is_true(ran)
  end))

  it("call_later with a negative delay runs soon", async(function()
    local loop = lunio.get_running_loop()
    local ran = false
    loop:call_later(-1, function() ran = true end)
    lunio.sleep(0.001)
    assert.is_true(ran)
  end))

  it("return handles whose cancel() prevents the call", async(function()
    local loop = lunio.get_running_loop()
    local log = {}
    local a = loop:call_later(0.005, function() log[#log + 1] = "later" end)
    local b = loop:call_at(loop:time() + 0.005, function() log[#log + 1] = "at" end)
    loop:call_later(0.005, function() log[#log + 1] = "kept" end)
    a:cancel()
    b:cancel()
    lunio.sleep(0.02)
    assert.are.same({ "kept" }, log)
  end))
end)

describe("loop callbacks", function()
  after_each(h.restore_handler)

  it("send their errors to the exception handler and the loop goes on", async(function()
    local e = { tag = "cb" }
    local reports = h.reports(function(ctx)
      return ctx.error == e or tostring(ctx.error):find("text failure", 1, true)
    end)
    local loop = lunio.get_running_loop()
    loop:call_soon(function() error(e) end)
    loop:call_later(0.001, function() error("text failure") end)
    lunio.sleep(0.01)
    assert.are.equal(2, #reports)
    assert.are.equal(e, reports[1].error)
    assert.matches("text failure", tostring(reports[2].error))
    assert.is_string(reports[1].message)
    lunio.sleep(0.001) -- still running
  end))

  it("cannot await: the error goes to the exception handler", async(function()
    local reports = h.reports("outside")
    local loop = lunio.get_running_loop()
    local after = false
    loop:call_soon(function()
      lunio.sleep(0)
      after = true
    end)
    lunio.sleep(0.005)
    assert.is_false(after)
    assert.are.equal(1, #reports)
    assert.matches("outside", tostring(reports[1].error))
  end))

  it("cannot await a task either", async(function()
    local reports = h.reports("outside")
    local loop = lunio.get_running_loop()
    local t = lunio.create_task(lunio.sleep, 0.01)
    loop:call_soon(function() t:await() end)
    t:await()
    assert.are.equal(1, #reports)
    assert.matches("outside", tostring(reports[1].error))
  end))
end)

describe("loop:create_task", function()
  it("creates a task on that loop", function()
    local loop = h.new_loop()
    local t = loop:create_task(function(a, b) return a + b end, 2, 3)
    assert.are.equal(5, loop:run(function() return t:await() end))
    loop:close()
  end)

  it("accepts callable tables", function()
    local loop = h.new_loop()
    local t = loop:create_task(setmetatable({}, { __call = function(_, x) return x end }), 9)
    assert.are.equal(9, loop:run(function() return t:await() end))
    loop:close()
  end)
end)

describe("loop:is_running", function()
  it("is true only while the loop runs", function()
    local loop = h.new_loop()
    assert.is_false(loop:is_running())
    assert.is_true(loop:run(function() return loop:is_running() end))
    assert.is_false(loop:is_running())
    pcall(loop.run, loop, function() error("x") end)
    assert.is_false(loop:is_running())
    loop:close()
    assert.is_false(loop:is_running())
  end)
end)

describe("loop:stop", function()
  it("makes run return promptly; run raises as the main task did not finish", function()
    local loop = h.new_loop()
    local t0 = lunio.now()
    local ok = pcall(loop.run, loop, function()
      lunio.create_task(function() lunio.sleep(0.005) loop:stop() end)
      lunio.sleep(5)
    end)
    assert.is_false(ok)
    assert.is_true(lunio.now() - t0 < 1)
    assert.is_false(loop:is_running())
    loop:close()
  end)

  it("still lets run cancel the pending tasks when the main task returns", function()
    local loop = h.new_loop()
    local child
    local cleaned = false
    local r = loop:run(function()
      child = lunio.create_task(function()
        local _ <close> = setmetatable({}, { __close = function() cleaned = true end })
        lunio.sleep(10)
      end)
      lunio.sleep(0)
      loop:stop() -- asked to stop, but the main task finishes in this very step
      return "ret"
    end)
    assert.are.equal("ret", r)
    assert.is_true(child:done())
    assert.is_true(cleaned)
    loop:close()
  end)

  it("is a no-op on a loop that is not running", function()
    local loop = h.new_loop()
    loop:stop()
    assert.are.equal(1, loop:run(function() lunio.sleep(0.001) return 1 end))
    loop:close()
  end)
end)

describe("loop:close", function()
  it("cancels pending tasks, letting their cleanup run", function()
    local loop = h.new_loop()
    local cleaned = false
    local t
    pcall(loop.run, loop, function()
      t = lunio.create_task(function()
        local _ <close> = setmetatable({}, { __close = function() cleaned = true end })
        lunio.sleep(10)
      end)
      lunio.create_task(function() lunio.sleep(0.002) loop:stop() end)
      lunio.sleep(10)
    end)
    loop:close()
    assert.is_true(cleaned)
    assert.is_true(t:done())
  end)

  it("is idempotent and makes the loop unusable", function()
    local loop = h.new_loop()
    loop:run(lunio.sleep, 0)
    loop:close()
    loop:close()
    assert.has_error(function() loop:run(function() end) end)
    assert.has_error(function() loop:create_task(function() end) end)
    assert.has_error(function() loop:call_soon(function() end) end)
  end)

  it("raises on a running loop", async(function()
    local loop = lunio.get_running_loop()
    assert.has_error(function() loop:close() end)
    assert.is_true(loop:is_running())
    lunio.sleep(0.001)
  end))
end)

describe("the scheduler", function()
  it("does not stall when a step overruns another task's deadline", async(function()
    local t = lunio.create_task(lunio.sleep, 0.001, "woke")
    lunio.sleep(0)
    local hog_until = lunio.now() + 0.005
    while lunio.now() < hog_until do end -- hold the loop past t's deadline
    local t0 = lunio.now()
    lunio.sleep(0.01)
    assert.are.equal("woke", t:await())
    assert.is_true(lunio.now() - t0 < 0.5)
  end))

  -- Each case: the only timer is very far away, and the main task waits on
  -- nothing timed until lunio.testing's watchdog (0.1 s) ends the test. The
  -- loop must sleep meanwhile. In a subprocess: a spinning loop would hang.
  local far_cases = {
    { "sleep(math.huge)", "lunio.create_task(lunio.sleep, math.huge):await()" },
    { "sleep(1e300)", "lunio.create_task(lunio.sleep, 1e300):await()" },
    { "sleep(1e17)", "lunio.create_task(lunio.sleep, 1e17):await()" },
    { "call_later(1e300)", [[
      lunio.get_running_loop():call_later(1e300, function() end)
      lunio.Future():await()]] },
    { "call_at(math.huge)", [[
      lunio.get_running_loop():call_at(math.huge, function() end)
      lunio.Future():await()]] },
  }
  for _, c in ipairs(far_cases) do
    it(("does not spin or hang with a far-off timer: %s"):format(c[1]), function()
      local out, err, code = h.lua(([[
        local lunio = require "lunio"
        local c0 = os.clock()
        local ok, e = pcall(lunio.testing.async(function() %s end, { timeout = 0.1 }))
        print(ok, lunio.is_error(e, "timeout"), os.clock() - c0)
      ]]):format(c[2]), nil, { timeout = 2 })
      assert.are.equal(0, code, err)
      local ok, timed_out, cpu = out:match("^(%S+)\t(%S+)\t(%S+)")
      assert.are.equal("false", ok, out)
      assert.are.equal("true", timed_out, out)
      assert.is_true(tonumber(cpu) < 0.05, "cpu " .. tostring(cpu))
    end)
  end

  it("keeps time order between sleeps and callbacks", async(function()
    local loop = lunio.get_running_loop()
    local log = {}
    loop:call_later(0.01, function() log[#log + 1] = "cb" end)
    local t = lunio.create_task(function() lunio.sleep(0.005) log[#log + 1] = "task" end)
    lunio.sleep(0.02)
    t:await()
    assert.are.same({ "task", "cb" }, log)
  end))
end)
