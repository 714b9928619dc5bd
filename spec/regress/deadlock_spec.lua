-- With virtual time, sleep(math.huge) returned and now() became inf, so a
-- deadlocked test passed. The clock now jumps only to finite deadlines, and
-- a loop where every task waits and nothing (timer, I/O, handle) can wake
-- any of them reports a deadlock: the main task is cancelled with an error
-- of kind "deadlock", which run() raises.
local lunio = require "lunio"
local h = require "helper"

local function vt(fn)
  return lunio.testing.async(fn, { virtual_time = true, timeout = 2 * h.time_scale })
end

describe("regress: deadlocks under virtual time", function()
  it("sleep(math.huge) alone is a deadlock, not a jump to infinity", function()
    local err = h.catch(vt(function() lunio.sleep(math.huge) end))
    assert.is_true(lunio.is_error(err, "deadlock"), tostring(err))
    assert.matches("every task is waiting", err.message, 1, true)
  end)

  it("reports tasks waiting on each other", function()
    local err = h.catch(vt(function()
      local f = lunio.Future()
      local t = lunio.spawn(function() return f:await() end)
      lunio.Event():wait()
      t:await()
    end))
    assert.is_true(lunio.is_error(err, "deadlock"), tostring(err))
  end)

  it("the main task's cleanup runs, and what it awaits is cancelled", function()
    local log = {}
    local err = h.catch(vt(function()
      local child = lunio.spawn(function()
        local _ <close> = setmetatable({}, { __close = function()
          log[#log + 1] = "child cleanup"
        end })
        lunio.Future():await()
      end)
      local _ <close> = setmetatable({}, { __close = function()
        log[#log + 1] = "main cleanup"
      end })
      child:await()
    end))
    assert.is_true(lunio.is_error(err, "deadlock"), tostring(err))
    assert.are.same({ "child cleanup", "main cleanup" }, log)
  end)

  it("a main task that swallows the deadlock error is abandoned", function()
    local err = h.catch(vt(function()
      for _ = 1, 3 do pcall(lunio.sleep, math.huge) end
    end))
    assert.is_true(lunio.is_error(err, "deadlock"), tostring(err))
  end)

  it("finite deadlines still jump, and timeouts fire", vt(function()
    local t0 = lunio.now()
    lunio.sleep(3600)
    assert.near(3600, lunio.now() - t0, 1e-6)
    local ok, err = pcall(lunio.wait_for, function() lunio.sleep(math.huge) end, 60)
    assert.is_false(ok)
    assert.is_true(lunio.is_error(err, "timeout"))
    assert.is_true(lunio.now() < math.huge)
  end))
end)

describe("regress: deadlocks in real time", function()
  it("without SIGINT handling, nothing can wake the loop: a deadlock", function()
    local loop = lunio.new_loop()
    loop:set_signals(false)
    local ok, err = pcall(loop.run, loop, function() lunio.Future():await() end)
    loop:close()
    assert.is_false(ok)
    assert.is_true(lunio.is_error(err, "deadlock"), tostring(err))
  end)
end)
