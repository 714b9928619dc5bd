-- lunio.pcall, lunio.xpcall and lunio.is_cancelled (lua/lunio/init.lua):
-- catching errors around awaits without swallowing a cancellation.
local lunio = require "lunio"
local async = lunio.testing.async

local VT = { virtual_time = true }

describe("lunio.pcall", function()
  it("returns true and every result, as pcall does", async(function()
    local r = table.pack(lunio.pcall(function(a, b) lunio.sleep(0.01); return a, nil, b end, 1, 2))
    assert.same({ n = 4, true, 1, nil, 2 }, r)
  end))

  it("catches errors other than cancellation, after an await", async(function()
    local e = lunio.error("timeout", "x")
    local ok, err = lunio.pcall(function() lunio.sleep(0.01); error(e) end)
    assert.is_false(ok)
    assert.equal(e, err)
    ok, err = lunio.pcall(function() lunio.sleep(0.01); error("boom", 0) end)
    assert.is_false(ok)
    assert.equal("boom", err)
    ok, err = lunio.pcall(nil)
    assert.is_false(ok)
    assert.matches("attempt to call a nil value", err)
  end))

  it("re-raises a cancellation, so the task ends cancelled", async(function()
    local after = false
    local t = lunio.spawn(function()
      local ok = lunio.pcall(lunio.sleep, 10)
      after = ok
    end)
    lunio.sleep(0.01)
    t:cancel("stop")
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.is_true(lunio.is_cancelled(err))
    assert.equal("stop", err.message)
    assert.is_true(t:cancelled())
    assert.is_false(after)
  end))

  it("re-raises the very cancellation object: a timeout scope still fires", async(function()
    local caught = 0
    local ok, err = pcall(function()
      local _ <close> = lunio.timeout(1)
      while true do
        -- plain pcall here would swallow the scope's cancellation and loop
        if not lunio.pcall(lunio.sleep, 10) then caught = caught + 1 end
      end
    end)
    assert.is_false(ok)
    assert.is_true(lunio.is_error(err, "timeout"), tostring(err))
    assert.equal(0, caught)
  end, VT))

  it("lets a task group cancel a child that catches errors", async(function()
    local ok, err = pcall(function()
      local tg <close> = lunio.TaskGroup()
      tg:spawn(function()
        while true do lunio.pcall(lunio.sleep, 1) end
      end)
      tg:spawn(function() lunio.sleep(0.5); error(lunio.error("test", "fail")) end)
    end)
    assert.is_false(ok)
    assert.is_true(lunio.is_error(err, "task_group"))
    assert.equal(1, #err.errors)
    assert.equal("fail", err.errors[1].message)
  end, VT))

  it("plain pcall still catches a cancellation (the trap it avoids)", async(function()
    local t = lunio.spawn(function()
      local ok, err = pcall(lunio.sleep, 10)
      return ok, lunio.is_cancelled(err)
    end)
    lunio.sleep(0.01)
    t:cancel()
    local ok, was_cancel = t:await()
    assert.is_false(ok)
    assert.is_true(was_cancel)
    assert.is_false(t:cancelled())
  end))
end)

describe("lunio.xpcall", function()
  it("calls the handler with the error and returns its result", async(function()
    local seen
    local ok, v = lunio.xpcall(function(x)
      lunio.sleep(0.01)
      error({ n = x })
    end, function(e)
      seen = e
      return "handled " .. e.n
    end, 7)
    assert.is_false(ok)
    assert.equal("handled 7", v)
    assert.same({ n = 7 }, seen)
  end))

  it("returns true and every result on success", async(function()
    local r = table.pack(lunio.xpcall(function() lunio.sleep(0); return 1, 2 end, error))
    assert.same({ n = 3, true, 1, 2 }, r)
  end))

  it("re-raises a cancellation without calling the handler", async(function()
    local handled = false
    local t = lunio.spawn(function()
      lunio.xpcall(lunio.sleep, function(e) handled = true; return e end, 10)
      return "swallowed"
    end)
    lunio.sleep(0.01)
    t:cancel()
    assert.is_true(lunio.is_cancelled(select(2, pcall(t.await, t))))
    assert.is_true(t:cancelled())
    assert.is_false(handled)
  end))

  it("gives the handler the traceback of the failing place", async(function()
    local _, tb = lunio.xpcall(function() lunio.sleep(0); error("here") end, debug.traceback)
    assert.matches("here\nstack traceback:", tb)
  end))

  it("checks its handler", function()
    assert.has_error(function() lunio.xpcall(print, 42) end,
      "bad argument #2 to 'xpcall' (function expected, got number)")
  end)
end)

describe("lunio.is_cancelled", function()
  it("is true only for cancellation errors", async(function()
    local t = lunio.spawn(lunio.sleep, 1)
    lunio.sleep(0)
    t:cancel()
    local _, err = pcall(t.await, t)
    assert.is_true(lunio.is_cancelled(err))
    assert.is_false(lunio.is_cancelled(lunio.error("timeout", "x")))
    assert.is_false(lunio.is_cancelled({ kind = "cancelled", message = "fake" }))
    assert.is_false(lunio.is_cancelled("cancelled"))
    assert.is_false(lunio.is_cancelled(nil))
  end))
end)
