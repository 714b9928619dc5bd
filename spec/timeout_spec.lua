-- lunio.timeout scopes (lua/lunio/combinators.lua): expiry at the await
-- point, conversion of the scope's own cancellation only, nesting,
-- reschedule/expired, and no timer left behind by short-lived deadlines.
local lunio = require "lunio"
local async = lunio.testing.async

local VT = { virtual_time = true }

local function handles()
  return lunio.get_running_loop():scheduled_handles()
end

describe("lunio.timeout", function()
  it("cancels the block at its await point and raises timeout at the exit",
    async(function()
      local seen, after_sleep
      local t0 = lunio.now()
      local ok, err = lunio.pcall(function()
        local _ <close> = lunio.timeout(1)
        local ok2, e = pcall(lunio.sleep, 10)
        seen = not ok2 and e
        after_sleep = true
        error(e, 0) -- re-raise, as cleanup code should
      end)
      assert.is_false(ok)
      assert.is_true(lunio.is_error(err, "timeout"))
      assert.is_true(lunio.is_error(seen, "cancelled")) -- inside: a cancellation
      assert.is_true(after_sleep)
      assert.near(1, lunio.now() - t0, 0.01)
      assert.equal(0, handles())
    end, VT))

  it("does nothing when the block finishes in time", async(function()
    local scope
    do
      local s <close> = lunio.timeout(1)
      scope = s
      lunio.sleep(0.5)
    end
    assert.is_false(scope:expired())
    assert.equal(0, handles())
    lunio.sleep(1) -- no late cancellation arrives
  end, VT))

  it("timeout(nil) has no deadline; timeout(0) expires at the first await",
    async(function()
      do
        local s <close> = lunio.timeout(nil)
        assert.is_nil(s:when())
        lunio.sleep(100)
      end
      local ok, err = lunio.pcall(function()
        local _ <close> = lunio.timeout(0)
        lunio.sleep(0)
      end)
      assert.is_false(ok)
      assert.is_true(lunio.is_error(err, "timeout"))
    end, VT))

  it("lets other errors of the block through unchanged", async(function()
    local boom = lunio.error("boom", "x")
    local ok, err = lunio.pcall(function()
      local _ <close> = lunio.timeout(1)
      error(boom)
    end)
    assert.is_false(ok)
    assert.equal(boom, err)
  end, VT))

  it("does not convert an outside cancellation", async(function()
    local t = lunio.spawn(function()
      local _ <close> = lunio.timeout(10)
      lunio.sleep(5)
    end)
    lunio.sleep(1)
    t:cancel("from outside")
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.is_true(lunio.is_error(err, "cancelled"))
    assert.equal("from outside", err.message)
  end, VT))

  it("a block that swallows the cancellation ends normally, expired",
    async(function()
      local scope
      do
        local s <close> = lunio.timeout(1)
        scope = s
        pcall(lunio.sleep, 5)
        lunio.sleep(0.5) -- and goes on awaiting
      end
      assert.is_true(scope:expired())
      lunio.sleep(0)
    end, VT))

  it("withdraws its cancellation when the block exits before an await saw it",
    async(function()
      local scope
      do
        local s <close> = lunio.timeout(0) -- expires at once: cancel pending
        scope = s
        assert.is_true(s:expired())
      end -- no await in the block: the scope withdraws its own cancellation
      lunio.sleep(0) -- ... so this does not raise
      assert.is_true(scope:expired())
      do
        local s <close> = lunio.timeout(10)
        s:reschedule(-1) -- a deadline in the past expires at once, too
        assert.is_true(s:expired())
      end
      lunio.sleep(0)
    end))

  it("an outside cancellation pending at the exit is kept", async(function()
    local me = lunio.current_task()
    local ok, err = pcall(function()
      do
        local _ <close> = lunio.timeout(0)
        me:cancel("outside") -- requested while running: pending as well
      end
      lunio.sleep(0)
    end)
    assert.is_false(ok)
    assert.equal("outside", err.message)
  end))

  describe("nested", function()
    it("the inner deadline converts in the inner scope only", async(function()
      local outer_ok
      do
        local outer <close> = lunio.timeout(10)
        local ok, err = lunio.pcall(function()
          local _ <close> = lunio.timeout(1)
          lunio.sleep(5)
        end)
        assert.is_true(lunio.is_error(err, "timeout"))
        assert.is_false(ok)
        lunio.sleep(1)
        outer_ok = not outer:expired()
      end
      assert.is_true(outer_ok)
    end, VT))

    -- An outer scope of `outer` s around an inner one of `inner` s around a
    -- sleep of 5 s; returns pcall's results and what the inner block saw.
    local function nested(outer, inner)
      local inner_saw
      local ok, err = lunio.pcall(function()
        local _ <close> = lunio.timeout(outer)
        local _, e = pcall(function()
          local _ <close> = lunio.timeout(inner)
          lunio.sleep(5)
        end)
        inner_saw = e
        error(e, 0)
      end)
      return ok, err, inner_saw
    end

    it("the outer deadline passes through the inner scope unconverted",
      async(function()
        local ok, err, inner_saw = nested(1, 10)
        assert.is_false(ok)
        assert.is_true(lunio.is_error(inner_saw, "cancelled"))
        assert.is_true(lunio.is_error(err, "timeout"))
      end, VT))

    it("equal deadlines: the outer one fires first; the inner withdraws its own",
      async(function()
        local ok, err, inner_saw = nested(1, 1)
        assert.is_false(ok)
        assert.is_true(lunio.is_error(inner_saw, "cancelled"))
        assert.is_true(lunio.is_error(err, "timeout"))
        lunio.sleep(0) -- no cancellation is left pending
        assert.equal(0, handles())
      end, VT))
  end)

  describe("reschedule / expired / when", function()
    it("reschedule(s) moves the deadline to s from now", async(function()
      local t0 = lunio.now()
      local ok, err = lunio.pcall(function()
        local s <close> = lunio.timeout(1)
        lunio.sleep(0.5)
        s:reschedule(2)
        assert.near(t0 + 2.5, s:when(), 0.01)
        lunio.sleep(10)
      end)
      assert.is_true(lunio.is_error(err, "timeout"))
      assert.is_false(ok)
      assert.near(2.5, lunio.now() - t0, 0.01)
    end, VT))

    it("reschedule(nil) removes the deadline", async(function()
      do
        local s <close> = lunio.timeout(1)
        s:reschedule(nil)
        assert.is_nil(s:when())
        lunio.sleep(5)
        assert.is_false(s:expired())
      end
      assert.equal(0, handles())
    end, VT))

    it("an expired or closed scope cannot be rescheduled", async(function()
      local scope
      pcall(function()
        local s <close> = lunio.timeout(0.1)
        scope = s
        local ok = pcall(lunio.sleep, 1)
        assert.is_false(ok)
        assert.is_true(s:expired())
        local ok2, e = pcall(s.reschedule, s, 1)
        assert.is_false(ok2)
        assert.is_true(lunio.is_error(e, "invalid_state"))
      end)
      assert.is_true(scope:expired())
      local s2 = lunio.timeout(1)
      s2:close()
      assert.is_true(lunio.is_error(select(2, pcall(s2.reschedule, s2, 1)), "invalid_state"))
    end, VT))
  end)

  it("checks its arguments and needs a task", function()
    assert.has_error(function() lunio.timeout("1") end,
      "bad argument #1 to 'timeout' (number or nil expected, got string)")
    local ok, err = pcall(lunio.timeout, 1)
    assert.is_false(ok)
    assert.matches("outside a running task", err)
  end)
end)

describe("short deadlines leave nothing behind", function()
  it("100,000 wait_for calls that finish in time leave no timer and no memory",
    async(function()
      local function quick() return 1 end
      local function run(n)
        for _ = 1, n do lunio.wait_for(quick, 10) end
      end
      run(1000)
      collectgarbage()
      collectgarbage()
      local before = collectgarbage("count")
      run(100000)
      assert.equal(0, handles())
      collectgarbage()
      collectgarbage()
      local grown = collectgarbage("count") - before
      assert.is_true(grown < 256, ("memory grew by %.0f KiB"):format(grown))
    end, { virtual_time = true, timeout = 60 }))

  it("100,000 timeout scopes leave no timer", async(function()
    for _ = 1, 100000 do
      local _ <close> = lunio.timeout(5)
    end
    assert.equal(0, handles())
    for _ = 1, 1000 do
      local _ <close> = lunio.timeout(5)
      lunio.sleep(0)
    end
    assert.equal(0, handles())
  end, { timeout = 60 }))
end)
