-- API.md "Tasks": awaiting inside pcall, metamethods, iterators and
-- __close; lunio.coroutine for generators that await; plain coroutines.
local lunio = require "lunio"
local h = require "helper"
local async = h.async

local lco = lunio.coroutine

-- A task that counts ticks while it runs, to prove other tasks ran during
-- an await. stop() cancels it and returns the count.
local function ticker()
  local n = 0
  local t = lunio.create_task(function()
    while true do
      n = n + 1
      lunio.sleep(0)
    end
  end)
  return function()
    t:cancel()
    pcall(t.await, t)
    return n
  end
end

describe("plain coroutine.yield() inside a task", function()
  it("fails the task with a clear error instead of hanging", async(function()
    local t = lunio.create_task(function()
      coroutine.yield("oops")
      return "not reached"
    end)
    local err = h.catch(t.await, t)
    assert.is_true(t:done())
    assert.is_false(t:cancelled())
    assert.matches("coroutine.yield", tostring(err))
  end))

  it("fails the task when yielded from inside pcall too", async(function()
    local t = lunio.create_task(function()
      pcall(coroutine.yield)
      return "not reached"
    end)
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.matches("coroutine.yield", tostring(err))
  end))

  it("leaves the loop working", async(function()
    local t = lunio.create_task(function() coroutine.yield() end)
    pcall(t.await, t)
    assert.are.equal("ok", lunio.create_task(function()
      lunio.sleep(0.001)
      return "ok"
    end):await())
  end))
end)

describe("awaiting inside a plain coroutine", function()
  it("raises an error naming lunio.coroutine (coroutine.wrap)", async(function()
    local gen = coroutine.wrap(function() lunio.sleep(0) return 1 end)
    local msg = h.errmsg(gen)
    assert.truthy(msg:find("lunio.coroutine", 1, true), msg)
    lunio.sleep(0.001) -- the task itself is fine
  end))

  it("raises an error naming lunio.coroutine (coroutine.create/resume)", async(function()
    local co = coroutine.create(function()
      local t = lunio.create_task(function() return 1 end)
      return t:await()
    end)
    local ok, msg = coroutine.resume(co)
    assert.is_false(ok)
    assert.truthy(tostring(msg):find("lunio.coroutine", 1, true), tostring(msg))
    lunio.sleep(0)
  end))
end)

describe("lunio.coroutine", function()
  it("offers the standard library's functions", function()
    for _, name in ipairs({ "create", "wrap", "resume", "yield", "status",
      "running", "isyieldable", "close" }) do
      assert.is_function(lco[name], name)
    end
  end)

  it("wrap: a generator that awaits between yields", async(function()
    local stop = ticker()
    local gen = lco.wrap(function(first)
      local got = first
      for i = 1, 3 do
        lunio.sleep(0.001)
        got = lco.yield(i * 10, got)
      end
      return "end"
    end)
    local out = {}
    local a, b = gen("start")
    out[#out + 1] = { a, b }
    a, b = gen("x")
    out[#out + 1] = { a, b }
    a, b = gen("y")
    out[#out + 1] = { a, b }
    out[#out + 1] = { gen("z") }
    assert.are.same({ { 10, "start" }, { 20, "x" }, { 30, "y" }, { "end" } }, out)
    assert.is_true(stop() > 0) -- the task really suspended
  end))

  it("create/resume/status: the coroutine's own yields go to its resumer", async(function()
    local co = lco.create(function(a)
      local b = lco.yield(a + 1)
      lunio.sleep(0.001)
      local c = lco.yield(b + 1)
      lunio.sleep(0)
      return c + 1
    end)
    assert.are.equal("suspended", lco.status(co))
    assert.are.same({ true, 2 }, { lco.resume(co, 1) })
    assert.are.same({ true, 11 }, { lco.resume(co, 10) })
    assert.are.same({ true, 101 }, { lco.resume(co, 100) })
    assert.are.equal("dead", lco.status(co))
    local ok, msg = lco.resume(co)
    assert.is_false(ok)
    assert.matches("dead", msg)
  end))

  it("passes values given to awaits back into the coroutine", async(function()
    local co = lco.wrap(function()
      local v = lunio.sleep(0.001, "slept")
      local t = lunio.create_task(function() return "r1", "r2" end)
      local r1, r2 = t:await()
      return v, r1, r2
    end)
    assert.are.same({ "slept", "r1", "r2" }, { co() })
  end))

  it("works as a generic-for iterator that awaits", async(function()
    local function numbers(n)
      return lco.wrap(function()
        for i = 1, n do
          lunio.sleep(0)
          lco.yield(i)
        end
      end)
    end
    local sum = 0
    for i in numbers(5) do sum = sum + i end
    assert.are.equal(15, sum)
  end))

  it("nests: a generator consuming another generator, both awaiting", async(function()
    local inner = lco.wrap(function()
      for i = 1, 3 do lunio.sleep(0.001) lco.yield(i) end
      return nil
    end)
    local outer = lco.wrap(function()
      while true do
        local v = inner()
        if v == nil then return nil end
        lunio.sleep(0)
        lco.yield(v * 2)
      end
    end)
    local out = {}
    for v in outer do out[#out + 1] = v end
    assert.are.same({ 2, 4, 6 }, out)
  end))

  it("propagates errors from a wrapped coroutine to its caller", async(function()
    local gen = lco.wrap(function()
      lunio.sleep(0)
      error("generator broke")
    end)
    local msg = h.errmsg(gen)
    assert.matches("generator broke", msg)
  end))

  it("resume returns false, err for errors after an await", async(function()
    local e = {}
    local co = lco.create(function() lunio.sleep(0) error(e) end)
    local ok, err = lco.resume(co)
    assert.is_false(ok)
    assert.are.equal(e, err)
    assert.are.equal("dead", lco.status(co))
  end))

  it("delivers cancellation inside the coroutine; its <close> cleanup runs", async(function()
    local log = {}
    local t = lunio.create_task(function()
      local gen = lco.wrap(function()
        local _ <close> = setmetatable({}, {
          __close = function() log[#log + 1] = "gen closed" end,
        })
        lunio.sleep(10)
        lco.yield(1)
      end)
      return gen()
    end)
    lunio.sleep(0)
    t:cancel()
    local err = h.catch(t.await, t)
    assert.is_true(lunio.is_error(err, "cancelled"))
    assert.is_true(t:cancelled())
    assert.are.same({ "gen closed" }, log)
  end))

  it("resumed once by plain coroutine.resume: an await inside raises, the task goes on",
    async(function()
      local co = lco.create(function()
        lco.yield(1)
        lunio.sleep(0.001) -- reached through the plain coroutine.resume below
        return 2
      end)
      assert.are.same({ true, 1 }, { lco.resume(co) })
      local ok, msg = coroutine.resume(co)
      assert.is_false(ok)
      assert.truthy(tostring(msg):find("lunio.coroutine", 1, true), tostring(msg))
      -- the task itself is unaffected
      assert.are.equal("still fine", lunio.sleep(0.001, "still fine"))
      local t = lunio.create_task(function() return "child" end)
      assert.are.equal("child", t:await())
    end))

  it("running and isyieldable behave as the standard ones", async(function()
    local co = lco.create(function()
      local me, ismain = lco.running()
      return me, ismain, lco.isyieldable()
    end)
    local ok, me, ismain, yieldable = lco.resume(co)
    assert.is_true(ok)
    assert.are.equal(co, me)
    assert.is_false(ismain)
    assert.is_true(yieldable)
  end))
end)

describe("awaiting where Lua 5.4 allows a yield", function()
  it("inside pcall and xpcall", async(function()
    local ok, v = pcall(function() return lunio.sleep(0.001, "p") end)
    assert.are.same({ true, "p" }, { ok, v })
    ok, v = xpcall(function()
      lunio.sleep(0)
      error("after await")
    end, function(m) return "handled: " .. tostring(m) end)
    assert.is_false(ok)
    assert.matches("^handled: .*after await", v)
    ok, v = xpcall(function() return lunio.sleep(0, "x") end, debug.traceback)
    assert.are.same({ true, "x" }, { ok, v })
  end))

  it("inside nested pcalls, with the error caught at the right level", async(function()
    local log = {}
    local ok, err = pcall(function()
      local ok2, err2 = pcall(function()
        lunio.sleep(0)
        error("inner")
      end)
      log[#log + 1] = (ok2 and "ok" or tostring(err2):match("inner"))
      lunio.sleep(0)
      error("outer")
    end)
    assert.is_false(ok)
    assert.matches("outer", err)
    assert.are.same({ "inner" }, log)
  end))

  it("inside metamethods (__index, __newindex, __lt, __le, __eq, __add, __concat, __len, __call)",
    async(function()
      local mt = {}
      mt.__index = function(_, k) return lunio.sleep(0, "idx:" .. k) end
      mt.__newindex = function(t, k, v) lunio.sleep(0) rawset(t, k, v * 2) end
      mt.__lt = function(a, b) lunio.sleep(0) return a.v < b.v end
      mt.__le = function(a, b) lunio.sleep(0) return a.v <= b.v end
      mt.__eq = function(a, b) lunio.sleep(0) return a.v == b.v end
      mt.__add = function(a, b) lunio.sleep(0) return a.v + b.v end
      mt.__concat = function(a, b) lunio.sleep(0) return tostring(a.v) .. tostring(b.v) end
      mt.__len = function(a) lunio.sleep(0) return a.v * 100 end
      mt.__call = function(a, x) lunio.sleep(0) return a.v + x end
      local a = setmetatable({ v = 1 }, mt)
      local b = setmetatable({ v = 2 }, mt)
      local stop = ticker()
      assert.are.equal("idx:foo", a.foo)
      a.w = 5
      assert.are.equal(10, rawget(a, "w"))
      assert.is_true(a < b)
      assert.is_true(a <= b)
      assert.is_false(a == b)
      assert.are.equal(3, a + b)
      assert.are.equal("12", a .. b)
      assert.are.equal(100, #a)
      assert.are.equal(8, a(7))
      assert.is_true(stop() >= 5)
    end))

  it("inside generic-for iterator functions", async(function()
    local function slow_range(n)
      local i = 0
      return function()
        i = i + 1
        if i > n then return nil end
        return lunio.sleep(0.001, i)
      end
    end
    local got = {}
    for v in slow_range(4) do got[#got + 1] = v end
    assert.are.same({ 1, 2, 3, 4 }, got)
  end))

  it("inside a generic-for's closing value", async(function()
    local closed = false
    local function iter()
      local closing = setmetatable({}, {
        __close = function() lunio.sleep(0.001) closed = true end,
      })
      local i = 0
      return function()
        i = i + 1
        if i <= 2 then return i end
      end, nil, nil, closing
    end
    for _ in iter() do
      if closed then break end
    end
    assert.is_true(closed)
    closed = false
    for v in iter() do
      if v == 1 then break end -- leaving early closes too
    end
    assert.is_true(closed)
  end))

  it("inside __close handlers, on normal exit and on error", async(function()
    local log = {}
    do
      local _ <close> = setmetatable({}, {
        __close = function() lunio.sleep(0.001) log[#log + 1] = "normal" end,
      })
    end
    local ok = pcall(function()
      local _ <close> = setmetatable({}, {
        __close = function(_, e)
          lunio.sleep(0.001)
          log[#log + 1] = tostring(e):match("failing") or "?"
        end,
      })
      error("failing")
    end)
    assert.is_false(ok)
    assert.are.same({ "normal", "failing" }, log)
  end))

  it("in the __call of a callable table used as a task body", async(function()
    local obj = setmetatable({}, {
      __call = function(_, x)
        lunio.sleep(0.001)
        local ok, v = pcall(lunio.sleep, 0, x)
        return ok and v
      end,
    })
    assert.are.equal("called", lunio.create_task(obj, "called"):await())
  end))
end)

describe("awaiting where Lua cannot yield", function()
  -- table.sort's comparator and xpcall's message handler are called without
  -- continuations by Lua itself: an await there is a programmer error that
  -- must raise, not crash the process or corrupt the scheduler. Each case
  -- runs in a subprocess (a crash must not take busted down).
  local cases = {
    { "table.sort comparator, sleep(0)", [[
      table.sort({ 3, 2, 1 }, function(a, b) lunio.sleep(0) return a < b end)
    ]] },
    { "table.sort comparator, sleep(0.001)", [[
      table.sort({ 3, 2, 1 }, function(a, b) lunio.sleep(0.001) return a < b end)
    ]] },
    { "table.sort comparator, task:await()", [[
      local t = lunio.create_task(lunio.sleep, 0.001)
      table.sort({ 3, 2, 1 }, function(a, b) t:await() return a < b end)
    ]] },
    { "xpcall message handler", [[
      local ok, err = xpcall(error, function(m) lunio.sleep(0) return m end, "x")
      assert(not ok)
      error(err, 0)
    ]] },
  }
  for _, c in ipairs(cases) do
    it(("(%s) raises and leaves the loop working"):format(c[1]), function()
      local out, stderr, code = h.lua(([[
        local lunio = require "lunio"
        print(lunio.run(function()
          local ok, err = pcall(function() %s end)
          print("raised", not ok, tostring(err):sub(1, 60))
          local t = lunio.create_task(function() lunio.sleep(0.001) return "child ok" end)
          lunio.sleep(0.002)
          for _ = 1, 3 do lunio.sleep(0) end
          return t:await()
        end))
      ]]):format(c[2]), nil, { timeout = 5 })
      assert.are.equal(0, code, stderr)
      assert.matches("raised\ttrue", out)
      assert.matches("child ok", out)
    end)
  end
end)
