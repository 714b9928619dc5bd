-- Event, Lock, Semaphore, BoundedSemaphore and Condition (lua/lunio/sync.lua):
-- behaviour, FIFO fairness, and consistency when waiters are cancelled.
local lunio = require "lunio"
local async = lunio.testing.async

local h = require "helper"
local settle, kind_of = h.settle, h.kind_of


describe("lunio.Event", function()
  it("starts unset; set() wakes every waiter, in FIFO order", async(function()
    local ev, order = lunio.Event(), {}
    assert.is_false(ev:is_set())
    local tasks = {}
    for i = 1, 3 do
      tasks[i] = lunio.spawn(function()
        assert.is_true(ev:wait())
        order[#order + 1] = i
      end)
    end
    settle()
    assert.same({}, order)
    ev:set()
    assert.is_true(ev:is_set())
    lunio.gather(tasks[1], tasks[2], tasks[3])
    assert.same({ 1, 2, 3 }, order)
    assert.is_true(ev:wait()) -- already set: returns at once
  end))

  it("clear() makes wait() block again", async(function()
    local ev = lunio.Event()
    ev:set()
    ev:clear()
    assert.is_false(ev:is_set())
    local t = lunio.spawn(function() return ev:wait() end)
    settle()
    assert.equal("waiting", t:state())
    ev:set()
    assert.is_true(t:await())
  end))

  it("a cancelled waiter leaves; the others still get set()", async(function()
    local ev = lunio.Event()
    local a = lunio.spawn(ev.wait, ev)
    local b = lunio.spawn(ev.wait, ev)
    settle()
    a:cancel()
    settle()
    assert.is_true(a:cancelled())
    assert.matches("1 waiting", tostring(ev))
    ev:set()
    assert.is_true(b:await())
  end))

  it("set() and a cancel in the same tick lose no wake-up", async(function()
    local ev, passed = lunio.Event(), false
    local a = lunio.spawn(function() ev:wait(); passed = true end)
    local b = lunio.spawn(function() return ev:wait() end)
    settle()
    ev:set()
    a:cancel() -- after the wake-up, before a runs: raised at the wait
    assert.is_true(b:await())
    settle()
    assert.is_true(a:cancelled())
    assert.is_false(passed)
    assert.is_true(ev:is_set())
  end))

  it("wait() outside a task says so", function()
    local ev = lunio.Event()
    local ok, err = pcall(ev.wait, ev)
    assert.is_false(ok)
    assert.matches("outside a running task", err)
  end)
end)

describe("lunio.Lock", function()
  it("acquire/release/locked; release of an unlocked lock is invalid_state",
    async(function()
      local lock = lunio.Lock()
      assert.is_false(lock:locked())
      lock:acquire()
      assert.is_true(lock:locked())
      lock:release()
      assert.is_false(lock:locked())
      assert.equal("invalid_state", kind_of(lock.release, lock))
    end))

  it("acquire() returns a guard that <close> releases, once", async(function()
    local lock = lunio.Lock()
    do
      local g <close> = lock:acquire()
      assert.is_true(lock:locked())
      g:release()
      assert.is_false(lock:locked())
    end -- closing again does nothing
    assert.is_false(lock:locked())
    local ok = pcall(function()
      local _ <close> = lock:acquire()
      error("boom")
    end)
    assert.is_false(ok)
    assert.is_false(lock:locked())
  end))

  it("a stale guard does not release somebody else's acquisition",
    async(function()
      local lock = lunio.Lock()
      local g = lock:acquire()
      lock:release()   -- released by hand
      lock:acquire()   -- a new acquisition
      g:release()      -- the old guard must not release it
      assert.is_true(lock:locked())
      lock:release()
    end))

  it("is FIFO-fair and lets no newcomer barge in", async(function()
    local lock, order = lunio.Lock(), {}
    local g = lock:acquire()
    local tasks = {}
    for i = 1, 5 do
      tasks[i] = lunio.spawn(function()
        local _ <close> = lock:acquire()
        order[#order + 1] = i
        lunio.sleep(0)
      end)
    end
    settle()
    g:release() -- handed to task 1 ...
    local late = lunio.spawn(function() -- ... which a newcomer cannot take
      local _ <close> = lock:acquire()
      order[#order + 1] = "late"
    end)
    lunio.gather(table.unpack(tasks))
    late:await()
    assert.same({ 1, 2, 3, 4, 5, "late" }, order)
    assert.is_false(lock:locked())
  end))

  it("a waiter cancelled while waiting leaves no trace", async(function()
    local lock = lunio.Lock()
    local g = lock:acquire()
    local a = lunio.spawn(function() local _ <close> = lock:acquire() end)
    local b = lunio.spawn(function() local _ <close> = lock:acquire(); return "b" end)
    settle()
    a:cancel()
    settle()
    assert.is_true(a:cancelled())
    g:release()
    assert.equal("b", b:await())
    assert.is_false(lock:locked())
  end))

  it("released to a waiter cancelled in the same tick: the next waiter gets it",
    async(function()
      local lock = lunio.Lock()
      local g = lock:acquire()
      local reached = false
      local a = lunio.spawn(function()
        local _ <close> = lock:acquire()
        reached = true
      end)
      local b = lunio.spawn(function() local _ <close> = lock:acquire(); return "b" end)
      settle()
      g:release() -- handed to a ...
      a:cancel()  -- ... cancelled before it ran: it passes the lock on
      assert.equal("b", b:await())
      assert.is_true(a:cancelled())
      assert.is_false(reached)
      assert.is_false(lock:locked())
    end))

  it("cancelling the holder inside the critical section releases via <close>",
    async(function()
      local lock = lunio.Lock()
      local holder = lunio.spawn(function()
        local _ <close> = lock:acquire()
        lunio.sleep(10)
      end)
      settle()
      assert.is_true(lock:locked())
      holder:cancel()
      settle()
      assert.is_false(lock:locked())
    end, { virtual_time = true }))
end)

describe("lunio.Semaphore", function()
  it("counts units; acquire waits at 0; release wakes in FIFO order",
    async(function()
      local sem, order = lunio.Semaphore(2), {}
      assert.equal(2, sem:value())
      local g1 = sem:acquire()
      local g2 = sem:acquire()
      assert.equal(0, sem:value())
      assert.is_true(sem:locked())
      local tasks = {}
      for i = 1, 3 do
        tasks[i] = lunio.spawn(function()
          local _ <close> = sem:acquire()
          order[#order + 1] = i
        end)
      end
      settle()
      assert.same({}, order)
      g1:release()
      g2:release()
      lunio.gather(table.unpack(tasks))
      assert.same({ 1, 2, 3 }, order)
      assert.equal(2, sem:value())
    end))

  it("defaults to 1 and rejects bad counts", function()
    assert.equal(1, lunio.Semaphore():value())
    assert.equal(0, lunio.Semaphore(0):value())
    assert.has_error(function() lunio.Semaphore(-1) end,
      "bad argument #1 to 'Semaphore' (value must be >= 0)")
    assert.has_error(function() lunio.Semaphore(1.5) end)
    assert.has_error(function() lunio.BoundedSemaphore("x") end)
  end)

  it("limits concurrency to n", async(function()
    local sem, running, peak = lunio.Semaphore(3), 0, 0
    local tasks = {}
    for i = 1, 20 do
      tasks[i] = lunio.spawn(function()
        local _ <close> = sem:acquire()
        running = running + 1
        if running > peak then peak = running end
        lunio.sleep(0.01 * (i % 4))
        running = running - 1
      end)
    end
    lunio.gather(tasks)
    assert.equal(3, peak)
    assert.equal(3, sem:value())
  end, { virtual_time = true }))

  it("a unit handed to a cancelled waiter is not lost", async(function()
    local sem = lunio.Semaphore(1)
    local g = sem:acquire()
    local a = lunio.spawn(function() local _ <close> = sem:acquire(); lunio.sleep(1) end)
    local b = lunio.spawn(function() local _ <close> = sem:acquire(); return "b" end)
    local c = lunio.spawn(function() local _ <close> = sem:acquire(); return "c" end)
    settle()
    c:cancel() -- cancelled while waiting
    settle()
    g:release() -- handed to a ...
    a:cancel()  -- ... which is cancelled in the same tick
    assert.equal("b", b:await())
    assert.is_true(a:cancelled())
    assert.is_true(c:cancelled())
    assert.equal(1, sem:value())
  end))
end)

describe("lunio.BoundedSemaphore", function()
  it("raises invalid_state on over-release", async(function()
    local sem = lunio.BoundedSemaphore(2)
    assert.equal("invalid_state", kind_of(sem.release, sem))
    local g = sem:acquire()
    sem:release() -- by hand: the guard's unit is back already
    assert.equal(2, sem:value())
    assert.equal("invalid_state", kind_of(g.release, g))
    assert.equal(2, sem:value())
    g:release() -- a guard releases at most once
  end))

  it("works with guards like Semaphore", async(function()
    local sem = lunio.BoundedSemaphore(1)
    do
      local _ <close> = sem:acquire()
      assert.equal(0, sem:value())
    end
    assert.equal(1, sem:value())
  end))
end)

describe("lunio.Condition", function()
  it("wait() and notify() need the lock (invalid_state)", async(function()
    local cond = lunio.Condition()
    assert.equal("invalid_state", kind_of(cond.wait, cond))
    assert.equal("invalid_state", kind_of(cond.notify, cond))
    assert.equal("invalid_state", kind_of(cond.notify_all, cond))
  end))

  it("rejects a lock that is not a lunio.Lock", function()
    assert.has_error(function() lunio.Condition({}) end)
  end)

  it("wait() releases the lock and holds it again when it returns",
    async(function()
      local lock = lunio.Lock()
      local cond = lunio.Condition(lock)
      local t = lunio.spawn(function()
        local _ <close> = cond:acquire()
        assert.is_true(cond:wait())
        return lock:locked()
      end)
      settle()
      assert.is_false(lock:locked()) -- released while waiting
      do
        local _ <close> = cond:acquire()
        cond:notify()
      end
      assert.is_true(t:await())
      assert.is_false(lock:locked()) -- the guard released it after wait()
    end))

  it("notify(n) wakes n waiters in FIFO order; notify_all the rest",
    async(function()
      local cond, order = lunio.Condition(), {}
      local tasks = {}
      for i = 1, 4 do
        tasks[i] = lunio.spawn(function()
          local _ <close> = cond:acquire()
          cond:wait()
          order[#order + 1] = i
        end)
      end
      settle()
      do
        local _ <close> = cond:acquire()
        cond:notify(2)
      end
      settle()
      assert.same({ 1, 2 }, order)
      do
        local _ <close> = cond:acquire()
        cond:notify_all()
      end
      lunio.gather(tasks)
      assert.same({ 1, 2, 3, 4 }, order)
    end))

  it("wait_for(predicate) returns the predicate's value", async(function()
    local cond, items = lunio.Condition(), {}
    local consumer = lunio.spawn(function()
      local _ <close> = cond:acquire()
      return cond:wait_for(function() return items[1] end)
    end)
    for _, v in ipairs({ false, "x" }) do
      settle()
      local _ <close> = cond:acquire()
      if v then items[1] = v end
      cond:notify_all()
    end
    assert.equal("x", consumer:await())
  end))

  it("a cancelled wait() re-acquires the lock before it raises",
    async(function()
      local lock = lunio.Lock()
      local cond = lunio.Condition(lock)
      local held_in_handler
      local t = lunio.spawn(function()
        local _ <close> = cond:acquire()
        local _, err = pcall(cond.wait, cond)
        held_in_handler = lock:locked()
        error(err, 0)
      end)
      settle()
      local g = lock:acquire() -- so the cancelled waiter must wait for it
      t:cancel()
      settle()
      assert.equal("waiting", t:state())
      g:release()
      settle()
      assert.is_true(t:cancelled())
      assert.is_true(held_in_handler)
      assert.is_false(lock:locked())
    end))

  it("a waiter cancelled after notify() passes the notification on",
    async(function()
      local cond = lunio.Condition()
      local a = lunio.spawn(function() local _ <close> = cond:acquire(); cond:wait() end)
      local b = lunio.spawn(function()
        local _ <close> = cond:acquire()
        cond:wait()
        return "b"
      end)
      settle()
      do
        local _ <close> = cond:acquire()
        cond:notify(1)
      end
      a:cancel()
      assert.equal("b", b:await())
      assert.is_true(a:cancelled())
    end))
end)

describe("waiting costs nothing", function()
  -- #novalgrind: 10,000 tasks with a collection step per scheduler step take
  -- minutes under valgrind; ASan and the plain suite run it.
  it("10,000 parked waiters schedule no callbacks and stay parked #novalgrind",
    async(function()
      local ev, lock, q = lunio.Event(), lunio.Lock(), lunio.Queue()
      local g = lock:acquire()
      local tasks = {}
      for i = 1, 10000 do
        local k = i % 3
        tasks[i] = lunio.spawn(function()
          if k == 0 then ev:wait() elseif k == 1 then lock:acquire():release() else q:get() end
        end)
      end
      settle()
      local loop = lunio.get_running_loop()
      assert.equal(0, loop:scheduled_handles())
      lunio.sleep(3600) -- virtual: jumps at once since nothing is runnable
      for i = 1, #tasks do assert.equal("waiting", tasks[i]:state()) end
      ev:set()
      g:release()
      for _ = 1, 3333 do q:put_nowait(true) end
      lunio.gather(tasks)
    end, { virtual_time = true, timeout = 60 }))
end)
