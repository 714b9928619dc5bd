-- API.md "Running": lunio.run, create_task/spawn, sleep, now, current_task,
-- all_tasks, get_running_loop, new_loop.
local lunio = require "lunio"
local h = require "helper"
local async = h.async

before_each(h.guard_default)
after_each(h.unguard_default)

local function closer(fn)
  return setmetatable({}, { __close = fn })
end

describe("lunio.run", function()
  it("returns every result of fn, nils included", function()
    local r = table.pack(lunio.run(function(a, b) return a, nil, b end, 1, 2))
    assert.are.equal(3, r.n)
    assert.are.same({ 1, nil, 2 }, { r[1], r[2], r[3] })
  end)

  it("returns nothing when fn returns nothing", function()
    assert.are.equal(0, select("#", lunio.run(function() end)))
  end)

  it("passes its extra arguments to fn, nils included", function()
    local n, c = lunio.run(function(...) return select("#", ...), select(3, ...) end,
      "a", nil, "c")
    assert.are.equal(3, n)
    assert.are.equal("c", c)
  end)

  it("accepts a callable table as fn", function()
    local obj = setmetatable({ k = 7 }, { __call = function(self, x) return self.k * x end })
    assert.are.equal(42, lunio.run(obj, 6))
  end)

  it("re-raises a string error with the failing task's traceback appended", function()
    local function explode_here() error("boom") end
    local err = h.catch(lunio.run, function() lunio.sleep(0) explode_here() end)
    assert.is_string(err)
    assert.matches("boom", err)
    assert.truthy(err:find("stack traceback:", 1, true))
    assert.truthy(err:find("explode_here", 1, true))
  end)

  it("re-raises the same table error, with .traceback added", function()
    local e = { code = 7 }
    local err = h.catch(lunio.run, function() lunio.sleep(0) error(e) end)
    assert.are.equal(e, err)
    assert.is_string(e.traceback)
    assert.truthy(e.traceback:find("stack traceback:", 1, true))
  end)

  it("re-raises a lunio error with its kind", function()
    local err = h.catch(lunio.run, function()
      local t = lunio.create_task(lunio.sleep, 1)
      return t:result()
    end)
    assert.is_true(lunio.is_error(err, "invalid_state"))
  end)

  it("re-raises non-string, non-table errors unchanged", function()
    assert.are.equal(42, h.catch(lunio.run, function() error(42) end))
  end)

  it("raises when a loop is already running, and the running loop goes on", function()
    local msgs = lunio.run(function()
      local ok1, e1 = pcall(lunio.run, function() return 1 end)
      local other = lunio.new_loop()
      local ok2, e2 = pcall(other.run, other, function() return 2 end)
      other:close()
      assert.is_false(ok1)
      assert.is_false(ok2)
      lunio.sleep(0.001) -- the outer loop still works
      return { tostring(e1), tostring(e2) }
    end)
    assert.matches("running", msgs[1])
    assert.matches("running", msgs[2])
  end)

  it("nested, raises an error that points at the caller's line, not lunio's", function()
    local line
    local msg = lunio.run(function()
      line = debug.getinfo(1, "l").currentline + 1
      local ok, e = pcall(function() lunio.run(print) end)
      assert.is_false(ok)
      return e
    end)
    assert.is_string(msg)
    assert.equal(("%s:%d: lunio.run: a loop is already running (inside a task, call the "
      .. "function or spawn it and await the task instead)")
      :format(debug.getinfo(1, "S").short_src, line), msg)
  end)

  it("runs tasks created before any loop runs", function()
    local ran = false
    lunio.create_task(function() ran = true end)
    lunio.run(lunio.sleep, 0)
    assert.is_true(ran)
  end)

  it("starts tasks queued before run ahead of the main task", function()
    local log = {}
    lunio.create_task(function() log[#log + 1] = "queued" end)
    lunio.run(function() log[#log + 1] = "main" lunio.sleep(0) end)
    assert.are.same({ "queued", "main" }, log)
  end)

  it("cancels tasks still pending when fn returns and waits for their cleanup", function()
    local child
    local cleaned = false
    local r = lunio.run(function()
      child = lunio.create_task(function()
        local _ <close> = closer(function()
          lunio.sleep(0.005) -- cleanup that awaits
          cleaned = true
        end)
        lunio.sleep(10)
      end)
      lunio.sleep(0)
      return "main done"
    end)
    assert.are.equal("main done", r)
    assert.is_true(cleaned)
    assert.is_true(child:cancelled())
  end)

  it("cancels pending tasks when fn raises too", function()
    local child
    assert.has_error(function()
      lunio.run(function()
        child = lunio.create_task(lunio.sleep, 10)
        lunio.sleep(0)
        error("main failed")
      end)
    end)
    assert.is_true(child:done())
    assert.is_true(child:cancelled())
  end)

  it("raises kind 'cancelled' when the main task is cancelled", function()
    local err = h.catch(lunio.run, function()
      local main = lunio.current_task()
      lunio.create_task(function() main:cancel("by child") end)
      lunio.sleep(1)
    end)
    assert.is_true(lunio.is_error(err, "cancelled"))
    assert.are.equal("by child", err.message)
  end)

  it("can be called again after a run that raised", function()
    assert.has_error(function() lunio.run(function() error("x") end) end)
    assert.are.equal("again", lunio.run(function() lunio.sleep(0.001) return "again" end))
  end)
end)

describe("lunio in a process whose malloc does not return zeroed memory", function()
  -- glibc's MALLOC_PERTURB_ fills fresh allocations with a byte pattern, as
  -- other allocators and ASan do: nothing may rely on memory being zero
  -- (e.g. the main thread's LUA_EXTRASPACE, which plain coroutines copy).
  it("creates tasks outside a loop and rejects awaits in plain coroutines", function()
    local out, err, code = h.lua([[
      local lunio = require "lunio"
      local t = lunio.create_task(function() return "queued" end)
      print(lunio.current_task() == nil)
      print(lunio.run(function()
        local co = coroutine.wrap(function() return pcall(lunio.sleep, 0) end)
        local ok, msg = co()
        return t:await(), ok, msg:find("lunio.coroutine", 1, true) ~= nil
      end))
    ]], nil, { env = { MALLOC_PERTURB_ = "65" } })
    assert.are.equal(0, code, err)
    assert.are.equal("true\nqueued\tfalse\ttrue\n", out)
  end)

  it("rejects awaits in plain coroutines created before lunio was loaded", function()
    local out, err, code = h.lua([[
      local early = coroutine.create(function(lunio)
        local ok, msg = pcall(lunio.sleep, 0)
        return ok, msg:find("lunio.coroutine", 1, true) ~= nil, lunio.current_task() == nil
      end)
      local lunio = require "lunio"
      print(lunio.run(function()
        return select(2, coroutine.resume(early, lunio))
      end))
    ]], nil, { env = { MALLOC_PERTURB_ = "65" } })
    assert.are.equal(0, code, err)
    assert.are.equal("false\ttrue\ttrue\n", out)
  end)
end)

describe("lunio.create_task / lunio.spawn", function()
  it("are the same function", function()
    assert.are.equal(lunio.create_task, lunio.spawn)
  end)

  it("runs a function with its arguments, nils included, and returns a Task",
    async(function()
      local t = lunio.create_task(function(...) return select("#", ...), ... end, 1, nil, 3)
      assert.are.same({ 3, 1, nil, 3 }, { t:await() })
      local t2 = lunio.spawn(function(a) return a * 2 end, 21)
      assert.are.equal(42, t2:await())
    end))

  it("runs a callable table (self first, then the arguments)", async(function()
    local obj = setmetatable({ base = 10 }, {
      __call = function(self, a, b) lunio.sleep(0) return self.base + a + b end,
    })
    assert.are.equal(13, lunio.create_task(obj, 1, 2):await())
    assert.are.equal(13, lunio.spawn(obj, 2, 1):await())
  end))

  it("runs a callable userdata", async(function()
    local f = assert(io.tmpfile())
    local mt = getmetatable(f)
    local saved = mt.__call
    mt.__call = function(self, x)
      lunio.sleep(0)
      return io.type(self), x
    end
    local ok, kind, x = pcall(function() return lunio.create_task(f, 5):await() end)
    mt.__call = saved
    f:close()
    assert.is_true(ok, kind)
    assert.are.equal("file", kind)
    assert.are.equal(5, x)
  end))

  it("does not start the task before the creator yields", async(function()
    local ran = false
    local t = lunio.create_task(function() ran = true end)
    assert.is_false(ran)
    assert.is_false(t:done())
    lunio.sleep(0)
    assert.is_true(ran)
  end))

  it("starts tasks on the next tick in creation order", async(function()
    local log = {}
    local tasks = {}
    for i = 1, 6 do
      tasks[i] = lunio.create_task(function() log[#log + 1] = i end)
    end
    lunio.sleep(0)
    assert.are.same({ 1, 2, 3, 4, 5, 6 }, log)
    for i = 1, 6 do assert.is_true(tasks[i]:done()) end
  end))

  it("creates tasks on the running loop, from inside tasks", async(function()
    local loop = lunio.get_running_loop()
    local seen = lunio.create_task(function()
      return lunio.create_task(lunio.get_running_loop):await()
    end):await()
    assert.are.equal(loop, seen)
  end))
end)

describe("lunio.sleep", function()
  it("returns its value", async(function()
    local v = {}
    assert.are.equal(v, lunio.sleep(0.001, v))
    assert.are.equal("x", lunio.sleep(0, "x"))
    assert.is_nil(lunio.sleep(0))
    assert.are.equal(0, select("#", lunio.sleep(0))) -- no value: nothing
    assert.are.equal(1, select("#", lunio.sleep(0, nil))) -- one nil
    assert.are.equal(0, select("#", lunio.sleep(0.001)))
  end))

  it("waits at least the given time", async(function()
    local t0 = lunio.now()
    lunio.sleep(0.02)
    assert.is_true(lunio.now() - t0 >= 0.02)
  end))

  it("sleep(0) lets every other ready task run exactly once", async(function()
    local log = {}
    local function worker(name)
      for i = 1, 3 do
        log[#log + 1] = name .. i
        lunio.sleep(0)
      end
    end
    local a = lunio.create_task(worker, "a")
    local b = lunio.create_task(worker, "b")
    lunio.sleep(0)
    log[#log + 1] = "m"
    lunio.sleep(0)
    log[#log + 1] = "m"
    a:await()
    b:await()
    assert.are.same({ "a1", "b1", "m", "a2", "b2", "m", "a3", "b3" }, log)
  end))

  it("treats a negative duration as 0", async(function()
    local log = {}
    local t = lunio.create_task(function() log[#log + 1] = "other" end)
    local t0 = lunio.now()
    assert.are.equal("v", lunio.sleep(-5, "v"))
    log[#log + 1] = "me"
    assert.is_true(lunio.now() - t0 < 0.5)
    assert.are.same({ "other", "me" }, log)
    t:await()
    assert.are.equal("w", lunio.sleep(-math.huge, "w"))
  end))

  it("wakes sleepers in deadline order", async(function()
    local log = {}
    local ts = {}
    for _, d in ipairs({ 0.03, 0.01, 0.02 }) do
      ts[#ts + 1] = lunio.create_task(function() lunio.sleep(d) log[#log + 1] = d end)
    end
    for _, t in ipairs(ts) do t:await() end
    assert.are.same({ 0.01, 0.02, 0.03 }, log)
  end))
end)

describe("lunio.now", function()
  it("is a monotonic number, inside and outside a loop", async(function()
    assert.is_number(lunio.now())
    local prev = lunio.now()
    for _ = 1, 200 do
      local t = lunio.now()
      assert.is_true(t >= prev)
      prev = t
    end
    lunio.sleep(0.01)
    assert.is_true(lunio.now() - prev >= 0.01)
  end))

  it("works outside any loop", function()
    local a = lunio.now()
    local b = lunio.now()
    assert.is_number(a)
    assert.is_true(b >= a)
  end)
end)

describe("lunio.current_task", function()
  it("is nil outside tasks", function()
    assert.is_nil(lunio.current_task())
  end)

  it("is the running Task inside a task", async(function()
    local child
    child = lunio.create_task(function() return lunio.current_task() end)
    assert.are.equal(child, child:await())
    local me = lunio.current_task()
    assert.is_not_nil(me)
    assert.are_not.equal(child, me)
  end))

  it("is nil inside loop callbacks", async(function()
    local seen = "unset"
    local loop = lunio.get_running_loop()
    loop:call_soon(function() seen = lunio.current_task() end)
    lunio.sleep(0.001)
    assert.is_nil(seen)
  end))
end)

describe("lunio.all_tasks", function()
  it("lists the tasks not yet done", async(function()
    local me = lunio.current_task()
    local a = lunio.create_task(lunio.sleep, 0.01)
    local b = lunio.create_task(function() end)
    local function has(list, t)
      for _, x in ipairs(list) do if x == t then return true end end
      return false
    end
    local all = lunio.all_tasks()
    assert.is_true(has(all, me))
    assert.is_true(has(all, a))
    assert.is_true(has(all, b))
    b:await()
    all = lunio.all_tasks()
    assert.is_false(has(all, b))
    assert.is_true(has(all, a))
    a:await()
    all = lunio.all_tasks()
    assert.are.same({ me }, all)
  end))
end)

describe("lunio.get_running_loop", function()
  it("raises outside a running loop", function()
    local err = h.errmsg(lunio.get_running_loop)
    assert.matches("loop", err)
  end)

  it("returns the Loop running the task", function()
    local loop = h.new_loop()
    local seen, running, child_seen = loop:run(function()
      local l = lunio.get_running_loop()
      return l, l:is_running(), lunio.create_task(lunio.get_running_loop):await()
    end)
    assert.are.equal(loop, seen)
    assert.are.equal(loop, child_seen)
    assert.is_true(running)
    loop:close()
  end)
end)

describe("lunio.new_loop", function()
  it("makes loops whose tasks do not mix", function()
    local a, b = h.new_loop(), h.new_loop()
    local log = {}
    local tb = b:create_task(function() log[#log + 1] = "b" return "from b" end)
    a:run(function()
      lunio.sleep(0.005)
      log[#log + 1] = "a"
      local function has(list, t)
        for _, x in ipairs(list) do if x == t then return true end end
        return false
      end
      assert.is_false(has(lunio.all_tasks(), tb))
      -- a task of another loop cannot be awaited here
      assert.has_error(function() tb:await() end)
    end)
    assert.are.same({ "a" }, log)
    assert.is_false(tb:done())
    assert.are.equal("from b", b:run(function() return tb:await() end))
    assert.are.same({ "a", "b" }, log)
    a:close()
    b:close()
  end)

  it("is independent of the default loop", function()
    local ran_default = false
    local t = lunio.create_task(function() ran_default = true end) -- default loop
    local l = h.new_loop()
    l:run(lunio.sleep, 0.001)
    l:close()
    assert.is_false(ran_default)
    lunio.run(lunio.sleep, 0)
    assert.is_true(ran_default)
    assert.is_true(t:done())
  end)
end)
