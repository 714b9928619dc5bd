-- Queue, LifoQueue and PriorityQueue (lua/lunio/sync.lua): sizes, blocking,
-- FIFO fairness among getters and putters, join/task_done, shutdown, and
-- cancellation safety (no item lost, none duplicated).
local lunio = require "lunio"
local async = lunio.testing.async

local h = require "helper"
local settle, kind_of = h.settle, h.kind_of


describe("lunio.Queue", function()
  it("maxsize nil or 0 is unbounded; negative or non-numbers are bad arguments",
    function()
      assert.equal(0, lunio.Queue().maxsize)
      assert.equal(0, lunio.Queue(0).maxsize)
      assert.equal(3, lunio.Queue(3).maxsize)
      assert.has_error(function() lunio.Queue(-1) end,
        "bad argument #1 to 'Queue' (maxsize must be >= 0)")
      assert.has_error(function() lunio.LifoQueue(-2) end,
        "bad argument #1 to 'LifoQueue' (maxsize must be >= 0)")
      assert.has_error(function() lunio.PriorityQueue("x") end)
      assert.has_error(function() lunio.Queue(2.5) end,
        "bad argument #1 to 'Queue' (maxsize must be an integer)")
      assert.equal(0, lunio.Queue(math.huge).maxsize)
    end)

  it("put/get in FIFO order; qsize/empty/full", async(function()
    local q = lunio.Queue(2)
    assert.is_true(q:empty())
    assert.is_false(q:full())
    q:put("a")
    q:put_nowait("b")
    assert.equal(2, q:qsize())
    assert.is_true(q:full())
    assert.equal("queue_full", kind_of(q.put_nowait, q, "c"))
    assert.equal("a", q:get())
    assert.equal("b", q:get_nowait())
    assert.equal("queue_empty", kind_of(q.get_nowait, q))
    local big = lunio.Queue()
    for i = 1, 1000 do big:put_nowait(i) end
    assert.is_false(big:full())
    for i = 1, 1000 do assert.equal(i, big:get_nowait()) end
  end))

  it("get() waits for put(); getters are served in FIFO order", async(function()
    local q, got = lunio.Queue(), {}
    local tasks = {}
    for i = 1, 3 do
      tasks[i] = lunio.spawn(function() got[i] = q:get() end)
    end
    settle()
    q:put("x")
    q:put("y")
    q:put("z")
    lunio.gather(tasks)
    assert.same({ "x", "y", "z" }, got)
  end))

  it("put() waits while full; putters are served in FIFO order", async(function()
    local q = lunio.Queue(1)
    q:put(0)
    local tasks = {}
    for i = 1, 3 do tasks[i] = lunio.spawn(q.put, q, i) end
    settle()
    assert.equal("waiting", tasks[1]:state())
    local got = {}
    for _ = 1, 4 do got[#got + 1] = q:get() end
    assert.same({ 0, 1, 2, 3 }, got)
    lunio.gather(tasks)
  end))

  it("a getter woken by put() keeps its item against a newcomer get()",
    async(function()
      local q = lunio.Queue()
      local first = lunio.spawn(q.get, q)
      settle()
      q:put("mine")
      local newcomer = lunio.spawn(q.get, q)
      settle()
      q:put("next")
      assert.equal("mine", first:await())
      assert.equal("next", newcomer:await())
    end))

  it("a woken getter whose item get_nowait() took waits again at the front",
    async(function()
      local q = lunio.Queue()
      local a = lunio.spawn(q.get, q)
      local b
      settle()
      q:put(1)
      assert.equal(1, q:get_nowait()) -- barges in before a runs
      settle()
      assert.equal("waiting", a:state())
      b = lunio.spawn(q.get, q)
      settle()
      q:put(2)
      q:put(3)
      assert.equal(2, a:await())
      assert.equal(3, b:await())
    end))

  it("task_done()/join(); too many task_done() is invalid_state", async(function()
    local q = lunio.Queue()
    q:join() -- nothing put: returns at once
    for i = 1, 3 do q:put(i) end
    local joined = false
    local joiner = lunio.spawn(function() q:join(); joined = true end)
    for _ = 1, 3 do
      q:get()
      settle()
      assert.is_false(joined)
      q:task_done()
    end
    joiner:await()
    assert.is_true(joined)
    assert.equal("invalid_state", kind_of(q.task_done, q))
  end))

  it("a cancelled join() leaves the queue consistent", async(function()
    local q = lunio.Queue()
    q:put(1)
    local j = lunio.spawn(q.join, q)
    settle()
    j:cancel()
    settle()
    assert.is_true(j:cancelled())
    q:get()
    q:task_done()
    q:join()
  end))
end)

describe("Queue:shutdown()", function()
  it("waiting getters and putters raise closed; put after it raises closed",
    async(function()
      local empty, full = lunio.Queue(), lunio.Queue(1)
      full:put(1)
      local g = lunio.spawn(empty.get, empty)
      local p = lunio.spawn(full.put, full, 2)
      settle()
      empty:shutdown()
      full:shutdown()
      assert.is_true(empty:is_shutdown())
      assert.equal("closed", kind_of(g.await, g))
      assert.equal("closed", kind_of(p.await, p))
      assert.equal("closed", kind_of(empty.put, empty, 1))
      assert.equal("closed", kind_of(empty.put_nowait, empty, 1))
      assert.equal("closed", kind_of(empty.get, empty))
      assert.equal("closed", kind_of(empty.get_nowait, empty))
    end))

  it("getters drain the items left, then raise closed", async(function()
    local q = lunio.Queue()
    q:put("a")
    q:put("b")
    q:shutdown()
    assert.equal("a", q:get())
    assert.equal("b", q:get_nowait())
    assert.equal("closed", kind_of(q.get, q))
  end))

  it("shutdown(true) drops the items and releases join()", async(function()
    local q = lunio.Queue()
    q:put("a")
    q:put("b")
    local j = lunio.spawn(q.join, q)
    settle()
    q:shutdown(true)
    assert.equal(0, q:qsize())
    assert.equal("closed", kind_of(q.get, q))
    j:await()
  end))
end)

describe("Queue:iter()", function()
  it("gets every item, waiting for more, and ends after shutdown and drain",
    async(function()
      local q = lunio.Queue(2)
      lunio.spawn(function()
        for i = 1, 5 do
          q:put(i)
          lunio.sleep(0.01)
        end
        q:put(false) -- false is an item, not the end
        q:shutdown()
      end)
      local got = {}
      for item in q:iter() do got[#got + 1] = item end
      assert.same({ 1, 2, 3, 4, 5, false }, got)
      assert.is_true(q:empty())
    end))

  it("ends at once on a queue shut down and empty, or after shutdown(true)",
    async(function()
      local q = lunio.Queue()
      q:shutdown()
      for _ in q:iter() do error("no item expected") end
      local q2 = lunio.Queue()
      q2:put(1)
      q2:shutdown(true)
      for _ in q2:iter() do error("no item expected") end
    end))

  it("ends the loop of a consumer waiting when the queue is shut down",
    async(function()
      local q = lunio.Queue()
      local consumer = lunio.spawn(function()
        local n = 0
        for _ in q:iter() do n = n + 1 end
        return "ended", n
      end)
      q:put("x")
      settle()
      assert.is_false(consumer:done())
      q:shutdown()
      assert.same({ "ended", 1 }, { consumer:await() })
    end))

  it("propagates a cancellation while waiting, and loses no item", async(function()
    local q = lunio.Queue()
    local consumer = lunio.spawn(function()
      for _ in q:iter() do error("no item expected") end
      return "loop ended"
    end)
    settle()
    consumer:cancel("stop")
    q:put("kept") -- put after the cancel request: the item must stay
    local ok, err = pcall(consumer.await, consumer)
    assert.is_false(ok)
    assert.is_true(lunio.is_cancelled(err))
    assert.equal("stop", err.message)
    assert.equal("kept", q:get_nowait())
  end))

  it("works for LifoQueue and PriorityQueue", async(function()
    -- put 2, 3, 1: LIFO gives 1, 3, 2; by priority 1, 2, 3
    for kind, expect in pairs({ LifoQueue = { 1, 3, 2 }, PriorityQueue = { 1, 2, 3 } }) do
      local q = lunio[kind]()
      for _, v in ipairs({ 2, 3, 1 }) do q:put(v) end
      q:shutdown()
      local got = {}
      for item in q:iter() do got[#got + 1] = item end
      assert.same(expect, got)
    end
  end))

  it("outside a task raises an error naming iter", function()
    local q = lunio.Queue()
    assert.has_error(function() for _ in q:iter() do end end,
      "'iter' called outside a running task (start one with lunio.run or lunio.create_task)")
  end)
end)

describe("lunio.LifoQueue and lunio.PriorityQueue", function()
  it("LifoQueue returns the last item first", async(function()
    local q = lunio.LifoQueue()
    for i = 1, 3 do q:put(i) end
    assert.same({ 3, 2, 1 }, { q:get(), q:get(), q:get() })
  end))

  it("PriorityQueue compares items with <", async(function()
    local q = lunio.PriorityQueue()
    for _, v in ipairs({ 5, 1, 4, 2, 3, 9, 0 }) do q:put(v) end
    local out = {}
    while not q:empty() do out[#out + 1] = q:get() end
    assert.same({ 0, 1, 2, 3, 4, 5, 9 }, out)
    for _, v in ipairs({ "pear", "apple", "fig" }) do q:put(v) end
    assert.same({ "apple", "fig", "pear" }, { q:get(), q:get(), q:get() })
  end))

  it("PriorityQueue takes {priority, value} pairs, FIFO among equals",
    async(function()
      local q = lunio.PriorityQueue()
      q:put({ 2, "b1" })
      q:put({ 1, "a1" })
      q:put({ 2, "b2" })
      q:put({ 1, "a2" })
      q:put({ 2, "b3" })
      local out = {}
      while not q:empty() do out[#out + 1] = q:get()[2] end
      assert.same({ "a1", "a2", "b1", "b2", "b3" }, out)
    end))

  it("PriorityQueue uses __lt of tables that have one", async(function()
    local mt = { __lt = function(a, b) return a.p < b.p end }
    local q = lunio.PriorityQueue()
    for _, p in ipairs({ 3, 1, 2 }) do q:put(setmetatable({ p = p }, mt)) end
    assert.same({ 1, 2, 3 }, { q:get().p, q:get().p, q:get().p })
  end))

  it("an item that cannot be compared raises and leaves the queue intact",
    async(function()
      local q = lunio.PriorityQueue()
      q:put(1)
      assert.has_error(function() q:put("x") end)
      assert.has_error(function() q:put({}) end)
      assert.equal(1, q:qsize())
      assert.equal(1, q:get())
      q:task_done() -- only one item was counted
      q:join()
    end))
end)

describe("queue cancellation safety", function()
  it("a getter cancelled while waiting takes nothing", async(function()
    local q = lunio.Queue()
    local a = lunio.spawn(q.get, q)
    local b = lunio.spawn(q.get, q)
    settle()
    a:cancel()
    settle()
    q:put("item")
    assert.equal("item", b:await())
    assert.is_true(a:cancelled())
  end))

  it("an item handed to a getter cancelled in the same tick goes to the next",
    async(function()
      local q = lunio.Queue()
      local a = lunio.spawn(q.get, q)
      local b = lunio.spawn(q.get, q)
      settle()
      q:put("item")
      a:cancel()
      assert.equal("item", b:await())
      assert.is_true(a:cancelled())
    end))

  it("wait_for(get) whose deadline fires in the tick of the put loses no item",
    async(function()
      local q, loop = lunio.Queue(), lunio.get_running_loop()
      local function get() return q:get() end
      local lost, got, timeouts = 0, 0, 0
      for _ = 1, 20 do
        -- due just before the wait_for deadline: both fire in one timer pass
        loop:call_later(0.002, q.put_nowait, q, "x")
        local ok = lunio.pcall(lunio.wait_for, get, 0.002)
        if ok then got = got + 1 else timeouts = timeouts + 1 end
        if not ok and q:empty() then lost = lost + 1 end
        while not q:empty() do q:get_nowait() end
      end
      assert.equal(0, lost)
      assert.is_true(timeouts > 0) -- the race did happen
    end))

  it("a cancelled putter puts nothing and frees its turn", async(function()
    local q = lunio.Queue(1)
    q:put(0)
    local a = lunio.spawn(q.put, q, "a")
    local b = lunio.spawn(q.put, q, "b")
    settle()
    a:cancel()
    settle()
    assert.equal(0, q:get())
    b:await()
    assert.equal("b", q:get())
    assert.is_true(q:empty())
  end))

  it("many producers and consumers with random cancellations lose nothing",
    async(function()
      local q = lunio.Queue(4)
      local n_items, seen = 2000, {}
      local producers, consumers = {}, {}
      for p = 1, 4 do
        producers[p] = lunio.spawn(function()
          for i = p, n_items, 4 do
            q:put(i)
            if i % 7 == 0 then lunio.sleep(0) end
          end
        end)
      end
      local received = 0
      local function consumer()
        while true do
          local v = q:get()
          assert.is_nil(seen[v])
          seen[v] = true
          received = received + 1
          lunio.sleep(0)
        end
      end
      for c = 1, 6 do consumers[c] = lunio.spawn(consumer) end
      -- keep cancelling and replacing consumers while items flow
      local rng = 12345
      while received < n_items do
        lunio.sleep(0)
        rng = (rng * 1103515245 + 12345) % 2147483648
        local c = rng % #consumers + 1
        consumers[c]:cancel()
        consumers[c] = lunio.spawn(consumer)
      end
      lunio.gather(producers)
      for c = 1, #consumers do consumers[c]:cancel() end
      lunio.wait(consumers)
      for i = 1, n_items do assert.is_true(seen[i], "item " .. i) end
      assert.is_true(q:empty())
    end, { timeout = 20 }))
end)
