-- lunio.to_thread (API.md "Processes, files, names, signals, threads"):
-- real worker threads with their own Lua states; what is copied and what
-- is refused (naming the path), errors with the worker's traceback,
-- reuse of worker states, cancellation (queued, running, finished), the
-- separate pool (CPU-bound work does not starve fs or DNS), and closing a
-- loop while a worker still runs.
local lunio = require "lunio"
local fs = require "lunio.fs"
local h = require "helper"

local function async(fn, opts) return h.async(fn, opts) end
local scale = h.time_scale
local to_thread = lunio.to_thread

-- Spins the CPU for `seconds` of wall time (read from /proc/uptime: the
-- worker has no lunio loop) and returns the iterations done. A chunk, so
-- that its only upvalue is _ENV.
local spin = assert(load([[
  local seconds = ...
  local function now()
    local f = io.open("/proc/uptime")
    local t = f:read("n")
    f:close()
    return t
  end
  local t0, n = now(), 0
  while now() - t0 < seconds do
    for _ = 1, 10000 do n = n + 1 end
  end
  return n
]]))

-- Runs in a worker: creates the file `started`, then spins until the file
-- `release` exists. Lets a spec hold a worker exactly as long as it wants.
local gate = assert(load([[
  local started, release = ...
  io.open(started, "w"):close()
  while true do
    local f = io.open(release)
    if f then
      f:close()
      return "released"
    end
  end
]]))

local function tmpname() return h.mktemp("lunio-thread-spec", "-u") end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local kind_of = h.kind_and_error

-- Waits until abandoned jobs finished (their async handle closes).
local function settle_jobs()
  local loop = lunio.get_running_loop()
  while loop:active_handles() > 0 do lunio.sleep(0.01) end
end

local function cancel_when_woken(task)
  if task:state() == "pending" then lunio.sleep(0) end
  assert.are.equal("waiting", task:state())
  while task:state() == "waiting" do lunio.sleep(0) end
  task:cancel()
end

local THREADS = tonumber(os.getenv("LUNIO_THREADS") or "")
if not THREADS or THREADS < 1 then
  local p = io.popen("nproc")
  THREADS = tonumber(p:read("l")) or 1
  p:close()
end

describe("lunio.to_thread", function()
  describe("copies", function()
    it("nil, booleans, integers, floats and strings with NULs, both ways", async(function()
      local r = table.pack(to_thread(function(...)
        local out = {}
        for i = 1, select("#", ...) do
          local v = select(i, ...)
          out[i] = type(v) == "number" and math.type(v) or type(v)
        end
        return table.concat(out, ","), ...
      end, nil, true, false, 42, -7, 1.5, math.huge, 2 ^ 63, "a\0b", nil))
      assert.are.equal(11, r.n)
      assert.are.equal("nil,boolean,boolean,integer,integer,float,float,float,string,nil", r[1])
      assert.is_nil(r[2])
      assert.is_true(r[3])
      assert.is_false(r[4])
      assert.are.equal("integer", math.type(r[5]))
      assert.are.equal(42, r[5])
      assert.are.equal(-7, r[6])
      assert.are.equal(1.5, r[7])
      assert.are.equal(math.huge, r[8])
      assert.are.equal("float", math.type(r[9]))
      assert.are.equal("a\0b", r[10])
      assert.is_nil(r[11])
      local nan = to_thread(function() return 0 / 0 end)
      assert.is_true(nan ~= nan)
      assert.are.equal(0, select("#", to_thread(function() end)))
      assert.are.equal(math.mininteger, to_thread(function(x) return x end, math.mininteger))
    end))

    it("nested tables with any plain keys; shared subtables are copied twice", async(function()
      local shared = { 1, 2 }
      local arg = {
        list = { "a", "b", { deep = { deeper = { true } } } },
        [1] = "one", [2.5] = "float key", [true] = "bool key",
        a = shared, b = shared,
      }
      local back = to_thread(function(t)
        t.list[3].deep.deeper[2] = "added"
        return t, t.a == t.b
      end, arg)
      assert.are.same({
        list = { "a", "b", { deep = { deeper = { true, "added" } } } },
        [1] = "one", [2.5] = "float key", [true] = "bool key",
        a = { 1, 2 }, b = { 1, 2 },
      }, back)
      assert.is_nil(arg.list[3].deep.deeper[2]) -- a copy, not the table
      assert.is_false(select(2, to_thread(function(t) return t, t.a == t.b end, arg)))
      local big = {}
      for i = 1, 100000 do big[i] = i end
      local n, sum = to_thread(function(t)
        local s = 0
        for i = 1, #t do s = s + t[i] end
        return #t, s
      end, big)
      assert.are.equal(100000, n)
      assert.are.equal(5000050000, sum)
    end))

    it("refuses functions, userdata, threads, cycles, odd keys, naming the path", async(function()
      local cyc = { x = {} }
      cyc.x.back = cyc
      local deep = {}
      local cur = deep
      for _ = 1, 150 do cur.next = {} cur = cur.next end
      local cases = {
        { "#2 to 'to_thread' %(args%[1%] is a function", print },
        { "#3 to 'to_thread' %(args%[2%]%.x is a function", 1, { x = print } },
        { "#2 to 'to_thread' %(args%[1%]%[3%]%.y is a userdata",
          { 1, 2, { y = io.stdout } } },
        { "#2 to 'to_thread' %(args%[1%]%[\"a b\"%] is a thread",
          { ["a b"] = coroutine.create(print) } },
        { "#2 to 'to_thread' %(args%[1%]%.x%.back refers back", cyc },
        { "#2 to 'to_thread' %(args%[1%] has a table key", { [{}] = 1 } },
        { "#2 to 'to_thread' %(args%[1%]%.next.*nested more than 100 deep", deep },
      }
      for _, c in ipairs(cases) do
        local ok, err = pcall(function() to_thread(function() end, table.unpack(c, 2)) end)
        assert.is_false(ok)
        assert.matches("bad argument " .. c[1], err)
      end
      -- the same for results, raised in the awaiting task
      local ok, err = pcall(to_thread, function() return 1, { f = print } end)
      assert.is_false(ok)
      assert.matches("cannot copy the results back: results%[2%]%.f is a function", err)
    end))
  end)

  describe("the function", function()
    it("must be a Lua function whose only upvalue is _ENV", async(function()
      local up = 1
      local cases = {
        { "#1 to 'to_thread' %(Lua function expected, got number%)", 42 },
        { "#1 to 'to_thread' %(Lua function expected, got table%)",
          setmetatable({}, { __call = function() end }) },
        { "#1 to 'to_thread' %(Lua function expected, got function%)", print },
        { "#1 to 'to_thread' %(the function has upvalue 'up'", function() return up end },
      }
      for _, c in ipairs(cases) do
        local ok, err = pcall(function() to_thread(c[2]) end)
        assert.is_false(ok)
        assert.matches("bad argument " .. c[1], err)
      end
      -- globals are fine: they are the worker's own
      assert.are.equal(8, to_thread(function(x) return math.floor(x) * 2 end, 4.5))
      assert.are.equal("function", to_thread(function() return type(string.rep) end))
    end))

    it("runs in a worker state that is reused and can require modules", async(function()
      -- luacheck: push ignore counter
      local first = to_thread(function()
        counter = (counter or 0) + 1
        return counter
      end)
      local second = to_thread(function()
        counter = (counter or 0) + 1
        return counter
      end)
      -- luacheck: pop
      assert.are.equal(1, first)
      assert.are.equal(2, second) -- one worker, kept for the next call
      assert.is_nil(rawget(_G, "counter")) -- not this state's globals
      assert.is_true(to_thread(function()
        return type(require("lunio.util").is_callable) == "function"
      end))
    end))

    it("does not hold the loop while it runs", async(function()
      local ticks, stop = 0, false
      local ticker = lunio.create_task(function()
        while not stop do
          ticks = ticks + 1
          lunio.sleep(0.005)
        end
      end)
      -- (scaled: under valgrind the threads take turns, and the ticker
      -- gets a share of 0.2 s too small for ten ticks)
      local n = to_thread(spin, 0.2 * scale)
      stop = true
      ticker:await()
      assert.is_true(n > 0)
      assert.is_true(ticks >= 10, "ticks: " .. ticks)
    end, { timeout = 3 }))
  end)

  describe("errors", function()
    it("a string error comes with the worker's traceback", async(function()
      local fn = load("local x = ...\nif x then error('boom: ' .. x) end", "=worker.lua")
      local ok, err = pcall(to_thread, fn, "bad")
      assert.is_false(ok)
      assert.matches("^worker.lua:2: boom: bad\nstack traceback:\n", err)
      assert.matches("worker.lua:2: in ", err)
      -- error values that are neither strings nor tables are described
      ok, err = pcall(to_thread, function() error() end)
      assert.is_false(ok)
      assert.matches("%(error object is a nil value%)", err)
      ok, err = pcall(to_thread, function()
        error(setmetatable({ x = 1 }, { __tostring = function() return "described" end }))
      end)
      assert.is_false(ok)
      assert.are.same({ x = 1 }, err) -- a table is copied raw, without its metatable
    end))

    it("a table error is copied", async(function()
      local ok, err = pcall(to_thread, function() error({ kind = "mine", n = 7, t = { 1 } }) end)
      assert.is_false(ok)
      assert.are.same({ kind = "mine", n = 7, t = { 1 } }, err)
      ok, err = pcall(to_thread, function() error({ f = print }) end)
      assert.is_false(ok)
      assert.matches("cannot copy the error back: error%[1%]%.f is a function", err)
    end))

    it("outside a task says so", function()
      local ok, err = pcall(to_thread, function() end)
      assert.is_false(ok)
      assert.matches("'to_thread' called outside a running task", err)
    end)
  end)

  describe("cancellation", function()
    it("of a queued job: it never runs", async(function()
      local marker, release = tmpname(), tmpname()
      local busy, started = {}, {}
      for i = 1, THREADS do -- every worker held
        started[i] = tmpname()
        busy[i] = lunio.create_task(to_thread, gate, started[i], release)
      end
      for i = 1, THREADS do
        while not exists(started[i]) do lunio.sleep(0.005) end
      end
      local queued = lunio.create_task(to_thread, function(path)
        io.open(path, "w"):close()
      end, marker)
      lunio.sleep(0)
      queued:cancel()
      assert.are.equal("cancelled", (kind_of(queued.await, queued)))
      io.open(release, "w"):close()
      for i = 1, THREADS do
        assert.are.equal("released", busy[i]:await())
        os.remove(started[i])
      end
      os.remove(release)
      -- every worker is free again; the cancelled job is gone for good
      assert.are.equal(3, to_thread(function() return 3 end))
      assert.is_false(fs.exists(marker))
    end, { timeout = 3 }))

    it("of a running job: the worker finishes, drops the results, is reused", async(function()
      local started, release = tmpname(), tmpname()
      local t = lunio.create_task(to_thread, gate, started, release)
      while not exists(started) do lunio.sleep(0.005) end
      t:cancel()
      assert.are.equal("cancelled", (kind_of(t.await, t)))
      io.open(release, "w"):close()
      assert.are.equal("after", to_thread(function() return "after" end))
      settle_jobs() -- the abandoned job ends (a leak until then)
      os.remove(started)
      os.remove(release)
    end, { timeout = 3 }))

    it("after the job finished: the results are dropped", async(function()
      local t = lunio.create_task(to_thread, function() return { "dropped" } end)
      cancel_when_woken(t)
      assert.are.equal("cancelled", (kind_of(t.await, t)))
      for _ = 1, 50 do -- and at random moments
        local u = lunio.create_task(to_thread, function(x) return x end, "y")
        for _ = 1, math.random(0, 3) do lunio.sleep(0) end
        u:cancel()
        pcall(u.await, u)
      end
      settle_jobs() -- the jobs that were running finish for nobody
    end, { timeout = 3 }))
  end)

  describe("its own pool", function()
    it("CPU-bound jobs do not starve fs or DNS (libuv's pool)", async(function()
      local jobs = {}
      for i = 1, THREADS * 2 + 4 do jobs[i] = lunio.create_task(to_thread, spin, 0.4) end
      lunio.sleep(0.05 * scale) -- every worker spins, the rest queue
      local t0 = lunio.now()
      assert.are.equal("directory", fs.stat("/").type)
      fs.read_file("/proc/self/status")
      lunio.getaddrinfo("localhost")
      local took = lunio.now() - t0
      assert.is_true(took < 0.1 * scale, ("fs and DNS took %.3f s"):format(took))
      for _, j in ipairs(jobs) do j:cancel() end
      for _, j in ipairs(jobs) do pcall(j.await, j) end
      settle_jobs() -- the running ones finish for nobody
    end, { timeout = 5 }))

    it("runs at most LUNIO_THREADS jobs at once", function()
      local out, err, code = h.lua([[
        local lunio = require "lunio"
        lunio.run(function()
          local t0 = lunio.now()
          local jobs = {}
          for i = 1, 4 do
            jobs[i] = lunio.create_task(lunio.to_thread, function()
              local function now()
                local f = io.open("/proc/uptime") local t = f:read("n") f:close() return t
              end
              local t = now()
              while now() - t < 0.15 do end
            end)
          end
          for i = 1, 4 do jobs[i]:await() end
          print(("%.2f"):format(lunio.now() - t0))
        end)
      ]], nil, { env = { LUNIO_THREADS = "2" } })
      assert.are.equal(0, code, err)
      local took = tonumber(out)
      assert.is_true(took >= 0.28 and took < 0.6 * scale, out) -- two rounds of two
    end)
  end)

  describe("closing the loop", function()
    it("does not wait for a running job, and the worker never touches it again", function()
      local loop = h.new_loop()
      loop:run(function()
        lunio.create_task(to_thread, spin, 0.3)
        lunio.create_task(to_thread, spin, 0.3)
        for _ = 1, 4 do lunio.create_task(to_thread, spin, 0.3) end -- queued
        lunio.sleep(0.05 * scale)
      end) -- the tasks are cancelled; the jobs keep running
      local function uptime()
        local f = io.open("/proc/uptime")
        local t = f:read("n")
        f:close()
        return t
      end
      local t0 = uptime()
      loop:close()
      assert.is_true(uptime() - t0 < 0.1 * scale, "close waited")
      -- the workers finish their jobs after the loop is gone (sanitizer
      -- builds would catch a touch of its memory), then exit
      local f = io.popen("sleep 0.4")
      f:close()
      collectgarbage()
    end)

    it("works under virtual time (the clock waits for the job)", async(function()
      local t0 = lunio.now()
      local job = lunio.create_task(to_thread, spin, 0.1)
      local slept = lunio.sleep(5, "slept")
      assert.are.equal("slept", slept)
      assert.is_true(job:done())
      assert.is_true(lunio.now() - t0 >= 5)
    end, { virtual_time = true, timeout = 3 }))
  end)
end)
