-- lunio.testing.async(fn, {virtual_time = true}): the autojump clock. Time
-- jumps to the next deadline only when every task waits on time alone, so
-- hour-long timeouts take microseconds while ready work still runs in order.
local lunio = require "lunio"
local async = lunio.testing.async

local VT = { virtual_time = true }

-- Wall-clock seconds (10 ms resolution), independent of the loop's clock.
local function wall()
  local f = io.open("/proc/uptime")
  if not f then return os.clock() end
  local s = f:read("n")
  f:close()
  return s
end

describe("virtual time", function()
  it("an hour-long sleep takes well under a second", async(function()
    local c0, t0 = wall(), lunio.now()
    lunio.sleep(3600)
    assert.is_true(lunio.now() - t0 >= 3600)
    assert.is_true(wall() - c0 < 0.5)
  end, VT))

  -- Regression: now + s can round below the true sum, and a sleeper then
  -- woke with a hair less than s elapsed on a clock that only jumps.
  it("a sleep of s always lets at least s pass", async(function()
    for i = 1, 2000 do
      local s = i * 0.0137 + 1 / 3
      local t0 = lunio.now()
      lunio.sleep(s)
      local slept = lunio.now() - t0
      assert(slept >= s, ("slept %.17g for sleep(%.17g)"):format(slept, s))
    end
  end, VT))

  it("an hour-long wait_for timeout and timeout scope expire at once",
    async(function()
      local c0, t0 = wall(), lunio.now()
      local ok, err = lunio.pcall(lunio.wait_for, function() lunio.sleep(7200) end, 3600)
      assert.is_false(ok)
      assert.is_true(lunio.is_error(err, "timeout"))
      assert.near(3600, lunio.now() - t0, 0.01)
      ok, err = lunio.pcall(function()
        local _ <close> = lunio.timeout(3600)
        lunio.Event():wait()
      end)
      assert.is_false(ok)
      assert.is_true(lunio.is_error(err, "timeout"))
      assert.near(7200, lunio.now() - t0, 0.01)
      assert.is_true(wall() - c0 < 0.5)
    end, VT))

  it("timers fire in deadline order, each at its own time", async(function()
    local fired, t0 = {}, lunio.now()
    local tasks = {}
    for i, d in ipairs({ 30, 10, 20, 10, 5 }) do
      tasks[i] = lunio.spawn(function()
        lunio.sleep(d)
        fired[#fired + 1] = { i, lunio.now() - t0 }
      end)
    end
    lunio.gather(tasks)
    local order = {}
    for k, f in ipairs(fired) do
      order[k] = f[1]
      assert.near(({ 30, 10, 20, 10, 5 })[f[1]], f[2], 0.01)
    end
    assert.same({ 5, 2, 4, 3, 1 }, order)
  end, VT))

  it("the clock does not jump while tasks are ready to run", async(function()
    local t0 = lunio.now()
    local stamps = {}
    local sleeper = lunio.spawn(function()
      lunio.sleep(10)
      return lunio.now() - t0
    end)
    local busy = lunio.spawn(function()
      for i = 1, 1000 do
        lunio.sleep(0)
        stamps[i] = lunio.now() - t0
      end
    end)
    busy:await()
    -- all the sleep(0) steps ran before the ten virtual seconds passed
    assert.is_true(stamps[1000] < 1)
    assert.is_false(sleeper:done())
    assert.near(10, sleeper:await(), 0.01)
  end, VT))

  it("ready work and timers interleave as they would in real time",
    async(function()
      local log, t0 = {}, lunio.now()
      local function note(what)
        log[#log + 1] = ("%s@%.2f"):format(what, lunio.now() - t0)
      end
      local worker = lunio.spawn(function()
        for i = 1, 3 do
          for _ = 1, 100 do lunio.sleep(0) end -- real work between timers
          note("w" .. i)
          lunio.sleep(1.25)
        end
      end)
      local ticker = lunio.spawn(function()
        for i = 1, 4 do
          lunio.sleep(1)
          note("t" .. i)
        end
      end)
      lunio.gather(worker, ticker)
      assert.same({ "w1@0.00", "t1@1.00", "w2@1.25", "t2@2.00", "w3@2.50",
        "t3@3.00", "t4@4.00" }, log)
    end, VT))

  it("queues and locks work across jumps", async(function()
    local q = lunio.Queue(1)
    local t0 = lunio.now()
    local producer = lunio.spawn(function()
      for i = 1, 5 do
        lunio.sleep(60)
        q:put(i)
      end
    end)
    local got = {}
    for _ = 1, 5 do got[#got + 1] = { q:get(), lunio.now() - t0 } end
    producer:await()
    for i = 1, 5 do
      assert.equal(i, got[i][1])
      assert.near(60 * i, got[i][2], 0.01)
    end
  end, VT))

  it("is off by default", async(function()
    local t0 = lunio.now()
    local c0 = os.clock()
    lunio.sleep(0.05)
    assert.is_true(lunio.now() - t0 >= 0.05)
    assert.is_true(lunio.now() - t0 < 1)
    assert.is_true(os.clock() - c0 < 0.05) -- waited without spinning
  end))
end)

describe("virtual time with real I/O", function()
  local srv
  setup(function()
    local ok, nginx = pcall(require, "support.nginx")
    if ok and os.execute("command -v nginx >/dev/null 2>&1") then
      srv = nginx.start()
    end
  end)
  teardown(function()
    if srv then srv:stop() end
  end)

  it("the clock does not jump while an HTTP transfer is in flight",
    async(function()
      if not srv then return end -- no nginx here: nothing to check
      local t0 = lunio.now()
      local sleeper = lunio.spawn(lunio.sleep, 3600)
      local resp = lunio.http.get(srv:url("/chunked")) -- ~0.3 s of real time
      assert.equal(200, resp.status)
      local elapsed = lunio.now() - t0
      assert.is_true(elapsed >= 0.2 and elapsed < 10, "elapsed " .. elapsed)
      assert.is_false(sleeper:done())
      sleeper:await() -- nothing else pending: jumps to the hour
      assert.is_true(lunio.now() - t0 >= 3600)
    end, VT))
end)
