--- lunio.sync: synchronisation primitives for tasks.
--
-- Event, Lock, Semaphore, BoundedSemaphore, Condition, Queue, LifoQueue and
-- PriorityQueue (Future is the C one, core.Future). init.lua merges the
-- table this module returns into `lunio` on first use (`lunio.Lock()`).
--
-- Every primitive keeps its waiting tasks in a FIFO list and parks them with
-- core.park(): waiting costs nothing until someone wakes the task. The rules
-- that keep the primitives consistent under cancellation:
--
-- * Whoever frees a resource wakes the first waiter that can still be woken
--   (core.wake returns false for a task whose cancellation already resumed
--   it; that entry is skipped) and hands it the resource (Lock, Semaphore)
--   or a claim on an item or slot (queues: the woken task re-checks).
-- * A waiter cancelled while parked (park() returns false and nobody woke
--   it) removes its entry and re-raises; nobody handed it anything.
-- * A waiter woken and then cancelled before it ran also gets false from
--   park() (the core raises a cancellation at the resume point, as asyncio
--   does). The list remembers whom it woke, so such a waiter knows it was
--   handed something: it passes the lock, unit, item or notification on to
--   the next waiter before it raises. Nothing is lost, no lock stays held.
--
-- Only "lunio.core" is required at load time (init.lua loads this lazily).
local core = require "lunio.core"
local util = require "lunio.util"

local park, wake = core.park, core.wake
local new_error = core.new_error
local setmetatable, getmetatable, type, error = setmetatable, getmetatable, type, error
local math_type, tostring = math.type, tostring

local M = {}

-- ---------------------------------------------------------------------------
-- Waiter lists: FIFO of tasks with O(1) removal of a cancelled entry.
-- Removed entries leave a `false` hole that shift() skips. `woken` marks
-- the tasks woken from this list that have not resumed yet.

local function wl_new()
  return { head = 1, tail = 0, n = 0, pos = {}, woken = {} }
end

local function wl_push(wl, task)
  local i = wl.tail + 1
  wl.tail = i
  wl[i] = task
  wl.pos[task] = i
  wl.n = wl.n + 1
end

-- Puts `task` back at the front (a woken waiter that lost its claim).
local function wl_unshift(wl, task)
  local i = wl.head - 1
  wl.head = i
  wl[i] = task
  wl.pos[task] = i
  wl.n = wl.n + 1
end

local function wl_remove(wl, task)
  local i = wl.pos[task]
  if i then
    wl[i] = false
    wl.pos[task] = nil
    wl.n = wl.n - 1
  end
end

-- Removes and returns the first task, or nil.
local function wl_shift(wl)
  local i, tail = wl.head, wl.tail
  while i <= tail do
    local task = wl[i]
    wl[i] = nil
    i = i + 1
    if task then
      wl.pos[task] = nil
      wl.n = wl.n - 1
      if i > tail then i, wl.tail = 1, 0 end
      wl.head = i
      return task
    end
  end
  wl.head, wl.tail = 1, 0
  return nil
end

-- Wakes the first waiter that can still be woken; true if one was.
local function wake_first(wl)
  while wl.n > 0 do
    local task = wl_shift(wl)
    if wake(task) then
      wl.woken[task] = true
      return true
    end
  end
  return false
end

-- Wakes up to `max` waiters (all by default); returns how many.
local function wake_some(wl, max)
  local n = 0
  max = max or math.huge
  while n < max and wl.n > 0 do
    local task = wl_shift(wl)
    if wake(task) then
      wl.woken[task] = true
      n = n + 1
    end
  end
  return n
end

local function running_task(fname)
  return util.running_task(fname, 3)
end

-- Parks the running task `me` in `wl`. Returns true when woken; false and
-- the cancellation error when cancelled while parked (its entry removed);
-- "late" and the error when it was woken and then cancelled before it ran:
-- the caller must pass on what it was handed, then raise.
local function wait_in(wl, me, front)
  if front then wl_unshift(wl, me) else wl_push(wl, me) end
  local ok, err = park()
  local woken = wl.woken[me]
  if woken then wl.woken[me] = nil end
  if ok then return true end
  if woken then return "late", err end
  wl_remove(wl, me)
  return false, err
end

local function invalid_state(msg)
  error(new_error("invalid_state", msg), 3)
end

-- ---------------------------------------------------------------------------
-- Event

---@class lunio.Event
local Event = {}
local EventMT = { __index = Event, __name = "lunio.Event" }

---An Event: tasks wait until some task sets it.
---@return lunio.Event
function M.Event()
  return setmetatable({ _set = false, _waiters = wl_new() }, EventMT)
end

---Sets the flag and wakes every waiting task.
function Event:set()
  if not self._set then
    self._set = true
    wake_some(self._waiters)
  end
end

---Clears the flag; later wait() calls block again.
function Event:clear()
  self._set = false
end

---@return boolean
function Event:is_set()
  return self._set
end

---Waits until the flag is set; returns true.
---@async
---@return true
function Event:wait()
  if self._set then return true end
  local ok, err = wait_in(self._waiters, running_task("wait"))
  if ok ~= true then error(err, 0) end
  return true
end

function EventMT:__tostring()
  return ("lunio.Event<%s, %d waiting>"):format(self._set and "set" or "unset",
    self._waiters.n)
end

-- ---------------------------------------------------------------------------
-- Guards: what acquire() returns. Closing the guard (`<close>`, or
-- guard:release()) releases the acquisition once; later calls do nothing.

---@class lunio.Guard
local Guard = {}
local GuardMT = { __index = Guard, __name = "lunio.Guard" }

local function new_guard(owner, gen)
  return setmetatable({ _owner = owner, _gen = gen }, GuardMT)
end

---Releases what acquire() acquired (once).
function Guard:release()
  local owner = self._owner
  if owner ~= nil then
    self._owner = nil
    owner:_release_guard(self._gen)
  end
end
Guard.close = Guard.release

function GuardMT:__close()
  self:release()
end

function GuardMT:__tostring()
  return ("lunio.Guard<%s>"):format(self._owner and "held" or "released")
end

-- ---------------------------------------------------------------------------
-- Lock
--
-- release() hands the lock straight to the first waiter that can be woken,
-- so the lock never looks free while a woken waiter is on its way: no task
-- can barge in (FIFO), and `locked == false` implies nobody waits.

---@class lunio.Lock
local Lock = {}
local LockMT = { __index = Lock, __name = "lunio.Lock" }

---A mutual exclusion lock for tasks (not reentrant).
---@return lunio.Lock
function M.Lock()
  return setmetatable({ _locked = false, _gen = 0, _waiters = wl_new() }, LockMT)
end

local function lock_hand_on(self)
  if not wake_first(self._waiters) then self._locked = false end
end

-- Acquires; returns true, or false and the cancellation error.
local function lock_acquire(self, me)
  if not self._locked then
    self._locked = true
    return true
  end
  local ok, err = wait_in(self._waiters, me)
  if ok == "late" then -- we own the lock: pass it on
    self._gen = self._gen + 1
    lock_hand_on(self)
    return false, err
  end
  return ok, err
end

---Acquires the lock, waiting in FIFO order; returns a guard whose closing
---releases it: `local _ <close> = lock:acquire()`.
---@async
---@return lunio.Guard
function Lock:acquire()
  if not self._locked then
    self._locked = true
  else
    local ok, err = lock_acquire(self, running_task("acquire"))
    if not ok then error(err, 0) end
  end
  local gen = self._gen + 1
  self._gen = gen
  return new_guard(self, gen)
end

---Releases the lock (raises "invalid_state" when it is not locked).
function Lock:release()
  if not self._locked then invalid_state("release of an unlocked lock") end
  self._gen = self._gen + 1
  lock_hand_on(self)
end

function Lock:_release_guard(gen)
  if self._locked and self._gen == gen then
    self._gen = gen + 1
    lock_hand_on(self)
  end
end

---@return boolean
function Lock:locked()
  return self._locked
end

function LockMT:__tostring()
  return ("lunio.Lock<%s, %d waiting>"):format(
    self._locked and "locked" or "unlocked", self._waiters.n)
end

-- ---------------------------------------------------------------------------
-- Semaphore and BoundedSemaphore
--
-- Like Lock: release() hands a unit straight to the first waiter, so
-- `value > 0` implies nobody waits.

---@class lunio.Semaphore
local Semaphore = {}
local SemaphoreMT = { __index = Semaphore, __name = "lunio.Semaphore" }

local function check_count(n, fname)
  if n == nil then return 1 end
  local i = math.tointeger(n)
  if i == nil then
    error(("bad argument #1 to '%s' (integer expected, got %s)"):format(fname,
      math_type(n) and "non-integer" or type(n)), 3)
  end
  if i < 0 then
    error(("bad argument #1 to '%s' (value must be >= 0)"):format(fname), 3)
  end
  return i
end

---A semaphore holding `n` units (default 1).
---@param n? integer
---@return lunio.Semaphore
function M.Semaphore(n)
  n = check_count(n, "Semaphore")
  return setmetatable({ _value = n, _waiters = wl_new() }, SemaphoreMT)
end

---A semaphore whose release() raises "invalid_state" past its initial value.
---@param n? integer
---@return lunio.Semaphore
function M.BoundedSemaphore(n)
  n = check_count(n, "BoundedSemaphore")
  return setmetatable({ _value = n, _bound = n, _waiters = wl_new() },
    SemaphoreMT)
end

local function sem_hand_on(self)
  if not wake_first(self._waiters) then
    local bound = self._bound
    if bound and self._value >= bound then
      invalid_state("BoundedSemaphore released too many times")
    end
    self._value = self._value + 1
  end
end

---Takes a unit, waiting in FIFO order while none is left; returns a guard
---whose closing releases it.
---@async
---@return lunio.Guard
function Semaphore:acquire()
  if self._value > 0 then
    self._value = self._value - 1
  else
    local ok, err = wait_in(self._waiters, running_task("acquire"))
    if ok == "late" then sem_hand_on(self) end
    if ok ~= true then error(err, 0) end
  end
  return new_guard(self)
end

---Gives a unit back: to the first waiter, else to the count. A
---BoundedSemaphore raises "invalid_state" instead of going past its
---initial value.
function Semaphore:release()
  sem_hand_on(self)
end

Semaphore._release_guard = sem_hand_on

---Units left.
---@return integer
function Semaphore:value()
  return self._value
end

---True when acquire() would wait.
---@return boolean
function Semaphore:locked()
  return self._value == 0
end

function SemaphoreMT:__tostring()
  return ("lunio.%s<value %d, %d waiting>"):format(
    self._bound and "BoundedSemaphore" or "Semaphore", self._value,
    self._waiters.n)
end

-- ---------------------------------------------------------------------------
-- Condition

---@class lunio.Condition
local Condition = {}
local ConditionMT = { __index = Condition, __name = "lunio.Condition" }

---A condition variable bound to `lock` (a new Lock by default).
---@param lock? lunio.Lock
---@return lunio.Condition
function M.Condition(lock)
  if lock == nil then
    lock = M.Lock()
  elseif getmetatable(lock) ~= LockMT then
    error("bad argument #1 to 'Condition' (lunio.Lock expected, got "
      .. type(lock) .. ")", 2)
  end
  return setmetatable({ _lock = lock, _waiters = wl_new() }, ConditionMT)
end

---Acquires the underlying lock (returns a guard).
---@async
---@return lunio.Guard
function Condition:acquire()
  return self._lock:acquire()
end

---Releases the underlying lock.
function Condition:release()
  return self._lock:release()
end

---@return boolean
function Condition:locked()
  return self._lock._locked
end

local function notify(self, n)
  return wake_some(self._waiters, n)
end

---Releases the lock, waits for notify(), re-acquires the lock (even when
---cancelled: the lock is held again whenever wait() returns or raises) and
---returns true. Raises "invalid_state" when the lock is not held.
---@async
---@return true
function Condition:wait()
  local lock = self._lock
  if not lock._locked then invalid_state("wait() on a condition whose lock is not held") end
  local me = running_task("wait")
  -- Keep the generation of the caller's acquisition so that its guard
  -- still releases the lock after wait() re-acquired it.
  local gen = lock._gen
  lock:release()
  local ok, err = wait_in(self._waiters, me)
  if ok == "late" then notify(self, 1) end -- pass the notification on
  -- Re-acquire whatever happens; a cancellation meanwhile is kept for later.
  while true do
    local got, e = lock_acquire(lock, me)
    if got then break end
    if ok == true then ok, err = false, e end
  end
  lock._gen = gen
  if ok ~= true then error(err, 0) end
  return true
end

---Waits until `predicate()` returns a true value, which it returns.
---@async
---@param predicate fun(): any
---@return any
function Condition:wait_for(predicate)
  if not util.is_callable(predicate) then
    error(("bad argument #1 to 'wait_for' (callable expected, got %s)"):format(type(predicate)), 2)
  end
  local r = predicate()
  while not r do
    self:wait()
    r = predicate()
  end
  return r
end

---Wakes up to `n` (default 1) waiting tasks. The lock must be held.
---@param n? integer
function Condition:notify(n)
  if n ~= nil and type(n) ~= "number" then
    error(("bad argument #1 to 'notify' (number expected, got %s)"):format(type(n)), 2)
  end
  if not self._lock._locked then invalid_state("notify() on a condition whose lock is not held") end
  notify(self, n or 1)
end

---Wakes every waiting task. The lock must be held.
function Condition:notify_all()
  if not self._lock._locked then
    invalid_state("notify_all() on a condition whose lock is not held")
  end
  notify(self, math.huge)
end

function ConditionMT:__tostring()
  return ("lunio.Condition<%s, %d waiting>"):format(
    self._lock._locked and "locked" or "unlocked", self._waiters.n)
end

-- ---------------------------------------------------------------------------
-- Queues
--
-- asyncio's design: put() stores the item and wakes the first getter, which
-- then takes an item itself. `_claims` counts getters woken but not run yet
-- (each owns one item): a newcomer get() waits behind them, so items are
-- served in FIFO order of the getters. A woken getter that finds its item
-- gone (taken by get_nowait) waits again at the front; a woken getter that
-- was cancelled wakes the next one. Putters mirror this with free slots.
--
-- Storage is per kind: FIFO ring (Queue), stack (LifoQueue), binary heap
-- with an insertion counter (PriorityQueue: FIFO among equal priorities).

---@class lunio.Queue
---@field maxsize integer 0 = unbounded
local Queue = {}

local function fifo_init(q) q._head, q._tail = 1, 0 end
local function fifo_size(q) return q._tail - q._head + 1 end
local function fifo_push(q, v)
  local t = q._tail + 1
  q._tail = t
  q[t] = v
end
local function fifo_pop(q)
  local h = q._head
  local v = q[h]
  q[h] = nil
  if h == q._tail then q._head, q._tail = 1, 0 else q._head = h + 1 end
  return v
end

local function lifo_init(q) q._n = 0 end
local function lifo_size(q) return q._n end
local function lifo_push(q, v)
  local n = q._n + 1
  q._n = n
  q[n] = v
end
local function lifo_pop(q)
  local n = q._n
  local v = q[n]
  q[n] = nil
  q._n = n - 1
  return v
end

-- PriorityQueue: parallel arrays keys/seqs/vals, 1-based binary min-heap.
local function prio_key(v)
  if type(v) == "table" then
    local mt = getmetatable(v)
    if not (mt and mt.__lt) then return v[1] end
  end
  return v
end

local function prio_init(q)
  q._n, q._seq, q._keys, q._seqs, q._vals = 0, 0, {}, {}, {}
end
local function prio_size(q) return q._n end

local function prio_less(keys, seqs, i, j)
  local a, b = keys[i], keys[j]
  if a < b then return true end
  if b < a then return false end
  return seqs[i] < seqs[j]
end

local function prio_swap(keys, seqs, vals, i, j)
  keys[i], keys[j] = keys[j], keys[i]
  seqs[i], seqs[j] = seqs[j], seqs[i]
  vals[i], vals[j] = vals[j], vals[i]
end

local function prio_push(q, v)
  local keys, seqs, vals = q._keys, q._seqs, q._vals
  local key = prio_key(v)
  if key == nil then
    error("bad argument #1 to 'put' (PriorityQueue item has no priority)", 3)
  end
  local n = q._n
  -- Compare once before changing anything: an incomparable item raises
  -- here and leaves the heap intact.
  if n > 0 then local _ = key < keys[1] end
  n = n + 1
  q._n = n
  q._seq = q._seq + 1
  keys[n], seqs[n], vals[n] = key, q._seq, v
  local i = n
  while i > 1 do
    local p = i // 2
    if not prio_less(keys, seqs, i, p) then break end
    prio_swap(keys, seqs, vals, i, p)
    i = p
  end
end

local function prio_pop(q)
  local keys, seqs, vals = q._keys, q._seqs, q._vals
  local n = q._n
  local v = vals[1]
  prio_swap(keys, seqs, vals, 1, n)
  keys[n], seqs[n], vals[n] = nil, nil, nil
  n = n - 1
  q._n = n
  local i = 1
  while true do
    local l = 2 * i
    if l > n then break end
    local c = l
    if l + 1 <= n and prio_less(keys, seqs, l + 1, l) then c = l + 1 end
    if not prio_less(keys, seqs, c, i) then break end
    prio_swap(keys, seqs, vals, i, c)
    i = c
  end
  return v
end

local kinds = {
  Queue = { init = fifo_init, size = fifo_size, push = fifo_push, pop = fifo_pop },
  LifoQueue = { init = lifo_init, size = lifo_size, push = lifo_push, pop = lifo_pop },
  PriorityQueue = { init = prio_init, size = prio_size, push = prio_push, pop = prio_pop },
}

local queue_mts = {}

local function new_queue(kind, maxsize)
  if maxsize == nil then
    maxsize = 0
  elseif type(maxsize) ~= "number" or maxsize ~= maxsize then
    error(("bad argument #1 to '%s' (number expected, got %s)"):format(kind,
      type(maxsize)), 3)
  elseif maxsize < 0 then
    error(("bad argument #1 to '%s' (maxsize must be >= 0)"):format(kind), 3)
  end
  if maxsize == math.huge then maxsize = 0 end
  maxsize = math.tointeger(maxsize)
  if maxsize == nil then
    error(("bad argument #1 to '%s' (maxsize must be an integer)"):format(kind), 3)
  end
  local ops = kinds[kind]
  local q = setmetatable({
    maxsize = maxsize,
    _size = ops.size, _push = ops.push, _pop = ops.pop,
    _getters = wl_new(), _putters = wl_new(), _joiners = wl_new(),
    _gclaims = 0, _pclaims = 0, _unfinished = 0, _shutdown = false,
  }, queue_mts[kind])
  ops.init(q)
  return q
end

---A FIFO queue; `maxsize` nil or 0 means unbounded.
---@param maxsize? integer
---@return lunio.Queue
function M.Queue(maxsize) return new_queue("Queue", maxsize) end

---A LIFO queue (last put, first got).
---@param maxsize? integer
---@return lunio.Queue
function M.LifoQueue(maxsize) return new_queue("LifoQueue", maxsize) end

---A queue that returns the smallest item first: items are compared with
---`<`, except plain tables, which are `{priority, value}` pairs compared by
---their first element. Equal priorities come out in FIFO order.
---@param maxsize? integer
---@return lunio.Queue
function M.PriorityQueue(maxsize) return new_queue("PriorityQueue", maxsize) end

local function q_closed()
  error(new_error("closed", "the queue is shut down"), 3)
end

-- Wake getters while there are items nobody has claimed yet.
local function wake_getters(q)
  local gw = q._getters
  while gw.n > 0 and q:_size() > q._gclaims do
    if wake_first(gw) then q._gclaims = q._gclaims + 1 end
  end
end

local function free_slots(q)
  local m = q.maxsize
  if m == 0 then return math.huge end
  return m - q:_size()
end

local function wake_putters(q)
  local pw = q._putters
  while pw.n > 0 and free_slots(q) > q._pclaims do
    if wake_first(pw) then q._pclaims = q._pclaims + 1 end
  end
end

local function q_store(q, v)
  q:_push(v)
  q._unfinished = q._unfinished + 1
  wake_getters(q)
end

local function q_take(q)
  local v = q:_pop()
  wake_putters(q)
  return v
end

---Number of items in the queue.
---@return integer
function Queue:qsize() return self:_size() end

---@return boolean
function Queue:empty() return self:_size() == 0 end

---True when the queue is bounded and holds maxsize items.
---@return boolean
function Queue:full()
  return self.maxsize > 0 and self:_size() >= self.maxsize
end

---Puts `v` without waiting; raises "queue_full" when full, "closed" after
---shutdown().
---@param v any
function Queue:put_nowait(v)
  if self._shutdown then q_closed() end
  if self.maxsize > 0 and self:_size() >= self.maxsize then
    error(new_error("queue_full", "the queue is full"), 2)
  end
  q_store(self, v)
end

---Puts `v`, waiting (FIFO) while the queue is full. Raises "closed" when
---the queue is (or gets) shut down.
---@async
---@param v any
function Queue:put(v)
  if self._shutdown then q_closed() end
  if free_slots(self) > self._pclaims then return q_store(self, v) end
  local me, front = running_task("put"), false
  while true do
    local ok, err = wait_in(self._putters, me, front)
    if ok == false then error(err, 0) end
    self._pclaims = self._pclaims - 1
    if ok == "late" then
      wake_putters(self)
      error(err, 0)
    end
    if self._shutdown then q_closed() end
    if free_slots(self) > self._pclaims then return q_store(self, v) end
    front = true -- our slot was taken by put_nowait: keep our place
  end
end

---Removes and returns an item without waiting; raises "queue_empty" when
---empty ("closed" when empty and shut down).
---@return any
function Queue:get_nowait()
  if self:_size() == 0 then
    if self._shutdown then q_closed() end
    error(new_error("queue_empty", "the queue is empty"), 2)
  end
  return q_take(self)
end

-- What q_get returns when the queue is shut down and empty.
local CLOSED = {}

-- Removes and returns an item, waiting (FIFO) while the queue is empty;
-- CLOSED once it is shut down and empty. Called by a public method called
-- by the user (level 3 for errors).
local function q_get(q, fname)
  if q:_size() > q._gclaims then return q_take(q) end
  if q._shutdown then return CLOSED end
  local me, front = util.running_task(fname, 3), false
  while true do
    local ok, err = wait_in(q._getters, me, front)
    if ok == false then error(err, 0) end
    q._gclaims = q._gclaims - 1
    if ok == "late" then -- cancelled after the wake-up: leave the item
      wake_getters(q)
      error(err, 0)
    end
    if q:_size() > 0 then return q_take(q) end
    if q._shutdown then return CLOSED end
    front = true -- our item was taken by get_nowait: keep our place
  end
end

---Removes and returns an item, waiting (FIFO) while the queue is empty.
---After shutdown() it still returns the items left (none after
---shutdown(true)), then raises "closed".
---@async
---@return any
function Queue:get()
  local v = q_get(self, "get")
  if v == CLOSED then q_closed() end
  return v
end

local function q_next(q)
  local v = q_get(q, "iter")
  if v == CLOSED then return nil end
  return v
end

---Iterator for `for item in q:iter() do ... end`: gets items as get()
---does, waiting while the queue is empty, until the queue is shut down and
---empty; then the loop ends (no error). A cancellation while waiting
---propagates. A nil item would end the loop: do not put nil.
---@async
---@return fun(q: lunio.Queue): any
---@return lunio.Queue
function Queue:iter()
  return q_next, self
end

---Marks one item got earlier as processed (for join()). Raises
---"invalid_state" when called more times than items were put.
function Queue:task_done()
  if self._unfinished <= 0 then
    invalid_state("task_done() called more times than items were put")
  end
  self._unfinished = self._unfinished - 1
  if self._unfinished == 0 then wake_some(self._joiners) end
end

---Waits until every item put has been marked with task_done().
---@async
function Queue:join()
  if self._unfinished == 0 then return end
  local ok, err = wait_in(self._joiners, running_task("join"))
  if ok ~= true then error(err, 0) end
end

---Shuts the queue down: put() and put_nowait() raise "closed" from now on
---and waiting putters are woken to raise it; getters drain the items left,
---then raise "closed". With `immediate` the items left are dropped (and
---counted as done for join()), so getters raise at once.
---@param immediate? boolean
function Queue:shutdown(immediate)
  self._shutdown = true
  if immediate then
    while self:_size() > 0 do
      self:_pop()
      if self._unfinished > 0 then self._unfinished = self._unfinished - 1 end
    end
    if self._unfinished == 0 then wake_some(self._joiners) end
  end
  self._gclaims = self._gclaims + wake_some(self._getters)
  self._pclaims = self._pclaims + wake_some(self._putters)
end

---True after shutdown().
---@return boolean
function Queue:is_shutdown()
  return self._shutdown
end

for kind in pairs(kinds) do
  local mt = { __index = Queue, __name = "lunio." .. kind }
  function mt.__tostring(q)
    return ("lunio.%s<%d item(s)%s%s, %d getter(s), %d putter(s) waiting>")
      :format(kind, q:_size(),
        q.maxsize > 0 and (", maxsize " .. tostring(q.maxsize)) or "",
        q._shutdown and ", shut down" or "", q._getters.n, q._putters.n)
  end
  queue_mts[kind] = mt
end

return M
