-- API.md "Testing helpers": lunio.testing.async runs the body as the main
-- task of a fresh loop, re-raises its error with the traceback, fails after
-- opts.timeout, and fails when tasks, callbacks or fds are left behind.
local lunio = require "lunio"
local h = require "helper"
local testing = lunio.testing

-- Runs testing.async(body, opts) the way busted would; returns ok, err, secs.
local function try(body, opts)
  local test = testing.async(body, opts)
  local t0 = lunio.now()
  local ok, err = pcall(test)
  return ok, err, lunio.now() - t0
end

describe("lunio.testing.async", function()
  it("returns a function for it(); a clean body passes", function()
    local test = testing.async(function() lunio.sleep(0.001) end)
    assert.is_function(test)
    test()
  end)

  it("runs the body as the main task of a fresh loop each time", function()
    local seen = {}
    for i = 1, 2 do
      testing.async(function()
        local loop = lunio.get_running_loop()
        seen[i] = { loop = loop, task = lunio.current_task(), running = loop:is_running() }
      end)()
    end
    assert.is_not_nil(seen[1].task)
    assert.is_true(seen[1].running)
    assert.are_not.equal(seen[1].loop, seen[2].loop)
  end)

  it("re-raises a string error with the task's traceback", function()
    local function failing_helper() error("assertion-like failure") end
    local ok, err = try(function()
      lunio.sleep(0)
      failing_helper()
    end)
    assert.is_false(ok)
    assert.is_string(err)
    assert.matches("assertion%-like failure", err)
    assert.truthy(err:find("stack traceback:", 1, true))
    assert.truthy(err:find("failing_helper", 1, true))
  end)

  it("re-raises a table error as is, with .traceback", function()
    local e = { custom = true }
    local ok, err = try(function() lunio.sleep(0) error(e) end)
    assert.is_false(ok)
    assert.are.equal(e, err)
    assert.is_string(e.traceback)
  end)

  it("re-raises busted assertion failures so busted reports them", function()
    local ok, err = try(function() assert.are.equal(1, 2) end)
    assert.is_false(ok)
    assert.matches("Expected objects to be equal", tostring(type(err) == "table"
      and (err.message or err[1]) or err))
  end)

  it("fails a body that leaves a task pending", function()
    local ok, err = try(function()
      lunio.create_task(lunio.sleep, 10)
      lunio.sleep(0)
    end)
    assert.is_false(ok)
    assert.matches("task", tostring(err))
  end)

  it("fails a body that leaves a callback scheduled", function()
    local ok, err = try(function()
      lunio.get_running_loop():call_later(10, function() end)
    end)
    assert.is_false(ok)
    assert.matches("callback", tostring(err))
  end)

  it("does not count a cancelled callback", function()
    local ok, err = try(function()
      lunio.get_running_loop():call_later(10, function() end):cancel()
    end)
    assert.is_true(ok, tostring(err))
  end)

  -- Runs a body that opens a pipe and leaves it open; returns try's ok and
  -- the error message (the pipe is closed afterwards).
  local function leak_a_pipe()
    local leaked
    local ok, err = try(function()
      leaked = io.popen("true", "r") -- a pipe, not closed by the body
      lunio.sleep(0)
    end)
    local msg = tostring(err)
    leaked:close()
    return ok, msg
  end

  it("fails a body that leaves a file descriptor open", function()
    local ok, msg = leak_a_pipe()
    assert.is_false(ok)
    assert.matches("file descriptor", msg)
  end)

  it("detects a leaked descriptor even when older garbage holds descriptors", function()
    -- file handles nobody references, closed only when collected: the
    -- collection after the body must not hide the body's own leak
    for _ = 1, 3 do
      local f = io.open("/dev/null")
      assert(f)
    end
    local ok, msg = leak_a_pipe()
    assert.is_false(ok)
    assert.matches("file descriptor", msg)
  end)

  it("passes a body that closes what it opens", function()
    local ok, err = try(function()
      local p = io.popen("true", "r")
      lunio.sleep(0)
      p:close()
    end)
    assert.is_true(ok, tostring(err))
  end)

  it("does not blame the first test of a process for libuv's own descriptors", function()
    local out, stderr, code = h.lua([[
      local lunio = require "lunio"
      local ok, err = pcall(lunio.testing.async(function() lunio.sleep(0.001) end))
      print(ok, err)
    ]])
    assert.are.equal(0, code, stderr)
    assert.matches("^true", out)
  end)

  it("fails the test after opts.timeout, promptly", function()
    local cleaned = false
    local ok, err, secs = try(function()
      local _ <close> = setmetatable({}, { __close = function() cleaned = true end })
      lunio.sleep(10)
    end, { timeout = 0.05 })
    assert.is_false(ok)
    assert.is_true(secs < 1, "took " .. secs)
    assert.matches("time", tostring(err))
    assert.is_true(cleaned)
  end)

  it("times out a body that never yields back to the loop for long", function()
    local ok, _, secs = try(function()
      while true do lunio.sleep(0) end
    end, { timeout = 0.05 })
    assert.is_false(ok)
    assert.is_true(secs < 1, "took " .. secs)
  end)

  it("defaults to a 5 s time limit", function()
    -- a 5 s sleep would be too slow here: check the limit with virtual time,
    -- where the body's clock runs far ahead of the real watchdog
    local ok, err = try(function() lunio.sleep(4.9) end, { virtual_time = true })
    assert.is_true(ok, tostring(err))
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() testing.async(42) end)
    assert.has_error(function() testing.async(function() end, { timeout = -1 }) end)
  end)
end)

describe("lunio.testing.async with opts.virtual_time", function()
  it("jumps the clock over sleeps (an hour takes microseconds)", function()
    local slept
    local ok, err, secs = try(function()
      local t0 = lunio.now()
      lunio.sleep(3600)
      slept = lunio.now() - t0
    end, { virtual_time = true })
    assert.is_true(ok, tostring(err))
    assert.is_true(slept >= 3600)
    assert.is_true(secs < 0.5, "took " .. secs)
  end)

  it("keeps the order of timers while jumping", function()
    local log = {}
    local ok, err = try(function()
      local a = lunio.create_task(function() lunio.sleep(300) log[#log + 1] = "300" end)
      local b = lunio.create_task(function() lunio.sleep(100) log[#log + 1] = "100" end)
      lunio.get_running_loop():call_later(200, function() log[#log + 1] = "200" end)
      a:await()
      b:await()
    end, { virtual_time = true })
    assert.is_true(ok, tostring(err))
    assert.are.same({ "100", "200", "300" }, log)
  end)

  it("still honours the real-time limit", function()
    local ok, _, secs = try(function()
      local f = lunio.Future()
      f:await() -- waits on nothing timed: the clock cannot jump
    end, { virtual_time = true, timeout = 0.05 })
    assert.is_false(ok)
    assert.is_true(secs < 1)
  end)
end)
