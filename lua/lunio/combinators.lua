--- lunio.combinators: waiting on several tasks, deadlines, task groups.
--
-- gather, wait, wait_for, shield, as_completed, timeout and TaskGroup.
-- init.lua merges the table this module returns into `lunio` on first use.
--
-- Everything here is built on the core's primitives: Task:await (which
-- already cancels what it awaits when the awaiting task is cancelled), the
-- Join (core.join: one C waiter for many tasks, registered in each task's
-- waiter slot, so waiting on N tasks costs one array entry per task and no
-- closure, table or callback per task), park()/wake() and timer handles.
-- A waiting task parks once and is woken by the Join or a timer, never by
-- polling; every timer handle is cancelled when the call that made it
-- returns or raises, so no handle outlives its scope.
--
-- Cancellations are recognised by identity: each timeout scope and task
-- group cancels with an error object of its own (core.cancel_with) and
-- converts or ignores only that object.
--
-- Only "lunio.core" is required at load time (init.lua loads this lazily).
local core = require "lunio.core"
local util = require "lunio.util"

local wake, current, spawn = core.wake, core.current, core.spawn
local join = core.join
local cancel_with, uncancel = core.cancel_with, core.uncancel
local new_error, is_error = core.new_error, core.is_error
local running_loop = core.running_loop
local type, select, error, pcall, rawequal = type, select, error, pcall, rawequal
local setmetatable, getmetatable, tostring = setmetatable, getmetatable, tostring
local unpack, concat = table.unpack, table.concat
local getinfo, traceback = debug.getinfo, debug.traceback
local format_error = util.format_error
local THIS_SOURCE = getinfo(1, "S").source

local M = {}

-- ---------------------------------------------------------------------------
-- helpers

local awaitable_names = {
  ["lunio.Task"] = true, ["lunio.Task.failed"] = true, ["lunio.Future"] = true,
}

local function is_awaitable(v)
  if type(v) ~= "userdata" then return false end
  local mt = getmetatable(v)
  return type(mt) == "table" and awaitable_names[mt.__name] == true
end

local is_callable = util.is_callable

local argerror = util.arg_error

-- A Task or Future as is; a callable spawned as a new Task.
local function to_awaitable(v, n, fname)
  if is_awaitable(v) then return v end
  if is_callable(v) then return spawn(v) end
  argerror(n, fname, "Task, Future or function expected, got " .. type(v), 3)
end

local function running_task(fname)
  return util.running_task(fname, 3)
end

local function check_seconds(s, n, fname)
  if s ~= nil and (type(s) ~= "number" or s ~= s) then
    argerror(n, fname, "number or nil expected, got "
      .. (type(s) == "number" and "NaN" or type(s)), 3)
  end
end

local function list_length(list)
  local n = list.n
  if type(n) == "number" then return n end
  return #list
end

-- Withdraws `err` if it is a pending (not yet delivered) cancellation of
-- `task`, leaving any other pending cancellation alone.
local function take_own_cancel(task, err)
  uncancel(task, err)
end

-- ---------------------------------------------------------------------------
-- gather

-- Cancels every member of the join j that is not done with err, and waits
-- until all of them are (the caller was cancelled: asyncio cancels what it
-- waits for and lets it finish cancelling).
local function cancel_members(j, err, fname)
  local members, n = j:members(), j:size()
  j:close()
  for i = 1, n do
    local t = members[i]
    if not t:done() then cancel_with(t, err) end
  end
  local all = join(fname, "all", members, n)
  while all:pending() > 0 do all:wait() end
  all:close()
end

-- Waits for the members of list[1..n] (Tasks, Futures, callables);
-- returns the list of first results (errors in place when return_errors),
-- or raises the first failure at once.
local function gather_list(list, n, return_errors)
  -- gather consumes its children's errors (asyncio does), so a join that
  -- raised early lingers until the rest finish, retrieving theirs.
  local j = join("gather", return_errors and "all" or "first_failure", list, n, true)
  local ok, err = j:wait()
  if not ok then
    cancel_members(j, err, "gather")
    error(err, 0)
  end
  if not return_errors then
    local failed = j:failed()
    if failed then
      j:close(true)
      return failed:await() -- raises its error
    end
  end
  local results = j:results(return_errors)
  j:close()
  return results
end

---Waits for several tasks. Varargs form: each argument is a Task, a Future
---or a function (spawned); returns the first result of each, in order, as
---multiple values. List form `gather(list [, opts])` returns a list (with
---`.n`); `opts.return_errors = true` puts error values in the list instead
---of raising. Otherwise the first error raises at once (the other tasks keep
---running). Cancelling the caller cancels every task it waits for.
---@async
---@param ... lunio.Task|lunio.Future|function|table
---@return any ...
function M.gather(...)
  local nargs = select("#", ...)
  local first = ...
  if nargs >= 1 and type(first) == "table" and not is_callable(first) then
    local opts = select(2, ...)
    if opts ~= nil and type(opts) ~= "table" then
      argerror(2, "gather", "table expected, got " .. type(opts))
    end
    return gather_list(first, list_length(first),
      opts ~= nil and opts.return_errors == true)
  end
  local tasks = {}
  for i = 1, nargs do
    tasks[i] = to_awaitable((select(i, ...)), i, "gather")
  end
  local results = gather_list(tasks, nargs, false)
  return unpack(results, 1, nargs)
end

-- ---------------------------------------------------------------------------
-- wait

local JOIN_MODES = {
  all_completed = "all", first_completed = "any", first_error = "first_error",
}

---Waits until the tasks of `list` are done (opts.return_when:
---"all_completed", the default; "first_completed"; "first_error": the first
---task that raised, or all done) or opts.timeout seconds passed. Returns
---`done, pending`, two lists in the order of `list`. Never raises the
---tasks' errors and never cancels them.
---@async
---@param list (lunio.Task|lunio.Future|function)[]
---@param opts? {timeout?: number, return_when?: "all_completed"|"first_completed"|"first_error"}
---@return lunio.Task[] done
---@return lunio.Task[] pending
function M.wait(list, opts)
  if type(list) ~= "table" then argerror(1, "wait", "table expected, got " .. type(list)) end
  if opts ~= nil and type(opts) ~= "table" then
    argerror(2, "wait", "table expected, got " .. type(opts))
  end
  opts = opts or {}
  local timeout, mode = opts.timeout, opts.return_when or "all_completed"
  check_seconds(timeout, 2, "wait")
  if not JOIN_MODES[mode] then
    argerror(2, "wait", "return_when must be \"all_completed\", "
      .. "\"first_completed\" or \"first_error\"")
  end
  local j = join("wait", JOIN_MODES[mode], list, list_length(list), false, true)
  if not (timeout and timeout <= 0) then
    local h = timeout and running_loop():call_later(timeout, wake, running_task("wait"))
    local ok, err = j:wait()
    if h then h:cancel() end
    if not ok then
      j:close()
      error(err, 0)
    end
  end
  j:close()
  local members = j:members()
  local done, pending = {}, {}
  for i = 1, j:size() do
    local t = members[i]
    if t:done() then done[#done + 1] = t else pending[#pending + 1] = t end
  end
  return done, pending
end

-- ---------------------------------------------------------------------------
-- wait_for

local function wait_for_expire(state)
  state.err = new_error("cancelled", "wait_for deadline")
  state.taken = cancel_with(state.target, state.err)
end

local function wait_for_finish(state, seconds, h, ok, ...)
  if h then h:cancel() end
  if state.taken and (ok or rawequal((...), state.err)) then
    -- The deadline passed and the task was cancelled for it: a timeout,
    -- even when the task swallowed the cancellation and returned.
    error(new_error("timeout", ("timed out after %g s"):format(seconds)), 0)
  end
  if not ok then error((...), 0) end
  return ...
end

---Awaits the task (a Task, Future or function to spawn) for at most
---`seconds` (nil: no limit). On expiry the task is cancelled, waited for
---until it has finished cancelling, and an error of kind "timeout" raised.
---@async
---@param task_or_fn lunio.Task|lunio.Future|function
---@param seconds? number
---@return any ...
function M.wait_for(task_or_fn, seconds)
  check_seconds(seconds, 2, "wait_for")
  local target = to_awaitable(task_or_fn, 1, "wait_for")
  if seconds == nil or target:done() then return target:await() end
  running_task("wait_for")
  local state = { target = target }
  local h
  if seconds <= 0 then -- expired already: cancel before it runs any further
    wait_for_expire(state)
  else
    h = running_loop():call_later(seconds, wait_for_expire, state)
  end
  return wait_for_finish(state, seconds, h, pcall(target.await, target))
end

-- ---------------------------------------------------------------------------
-- shield

---Awaits the task (a Task, Future or function to spawn) and returns its
---results; cancelling the awaiting task does not cancel it (the awaiter
---raises its cancellation at once, the task runs on).
---@async
---@param task_or_fn lunio.Task|lunio.Future|function
---@return any ...
function M.shield(task_or_fn)
  local target = to_awaitable(task_or_fn, 1, "shield")
  if target:done() then return target:await() end
  running_task("shield")
  local relay = core.Future()
  target:add_done_callback(function(t)
    local st = t:state()
    if relay:done() then -- the awaiter left: still consume the error
      if st ~= "done" then t:error() end
      return
    end
    if st == "done" then
      relay:set_result(t:result())
    elseif st == "cancelled" then
      cancel_with(relay, t:error())
    else
      relay:set_error(t:error())
    end
  end)
  return relay:await()
end

-- ---------------------------------------------------------------------------
-- as_completed

---Iterates over the tasks of `list` (Tasks, Futures or functions) in the
---order they finish: `for t in lunio.as_completed(list, 5) do ... end`.
---With `timeout`, raises an error of kind "timeout" when the next task is
---not done `timeout` seconds after the call. The tasks are not cancelled.
---@async
---@param list (lunio.Task|lunio.Future|function)[]
---@param timeout? number
---@return function iterator
function M.as_completed(list, timeout)
  if type(list) ~= "table" then
    argerror(1, "as_completed", "table expected, got " .. type(list))
  end
  check_seconds(timeout, 2, "as_completed")
  local j = join("as_completed", "each", list, list_length(list), false, true)
  local left = j:size()
  local loop = running_loop()
  local deadline = timeout and loop and loop:time() + timeout

  local function iterate()
    if left == 0 then
      j:close()
      return nil
    end
    local t = j:pop()
    if t == nil then
      local me = running_task("as_completed")
      local h
      if deadline then
        if running_loop():time() >= deadline then
          error(new_error("timeout", "as_completed timed out"), 2)
        end
        h = running_loop():call_at(deadline, wake, me)
      end
      local ok, err = j:wait()
      if h then h:cancel() end
      if not ok then error(err, 0) end
      t = j:pop()
      if t == nil then error(new_error("timeout", "as_completed timed out"), 2) end
    end
    left = left - 1
    return t
  end

  -- Closed when the loop ends, breaks or raises: detach the join.
  return iterate, nil, nil, j
end

-- ---------------------------------------------------------------------------
-- timeout scopes

---@class lunio.Timeout
local Timeout = {}
local TimeoutMT = { __index = Timeout, __name = "lunio.Timeout" }

local function scope_expire(self)
  if self._state ~= "active" then return end
  self._state = "expired"
  self._handle = nil
  self._err = new_error("cancelled", "timeout scope expired")
  cancel_with(self._task, self._err)
end

-- A deadline already passed expires the scope at once, so that the next
-- await (even sleep(0)) raises, as asyncio's timeout(0) does.
local function scope_arm(self, when)
  self._deadline = when
  if when <= self._loop:time() then
    scope_expire(self)
  else
    self._handle = self._loop:call_at(when, scope_expire, self)
  end
end

---A deadline scope for `<close>`: `local _ <close> = lunio.timeout(2)`. When
---the deadline passes inside the block, the task is cancelled at its await
---point and the scope turns that cancellation into an error of kind
---"timeout" as the block exits. `seconds = nil` sets no deadline.
---@param seconds? number
---@return lunio.Timeout
function M.timeout(seconds)
  check_seconds(seconds, 1, "timeout")
  local task = running_task("timeout")
  local loop = running_loop()
  local self = setmetatable({ _task = task, _loop = loop, _state = "active" },
    TimeoutMT)
  if seconds then scope_arm(self, loop:time() + seconds) end
  return self
end

---Moves the deadline to `seconds` from now; nil removes it. Raises
---"invalid_state" once the scope expired or was closed.
---@param seconds? number
function Timeout:reschedule(seconds)
  check_seconds(seconds, 1, "reschedule")
  if self._state ~= "active" then
    error(new_error("invalid_state", "cannot reschedule a timeout scope that "
      .. (self._state == "expired" and "expired" or "is closed")), 2)
  end
  if self._handle then
    self._handle:cancel()
    self._handle = nil
  end
  self._deadline = nil
  if seconds then scope_arm(self, self._loop:time() + seconds) end
end

---True once the deadline passed (and the task was cancelled for it).
---@return boolean
function Timeout:expired()
  return self._err ~= nil
end

---The deadline in loop time (see lunio.now()), or nil.
---@return number?
function Timeout:when()
  return self._deadline
end

local function scope_exit(self, err)
  local state = self._state
  if state == "closed" then return end
  self._state = "closed"
  if self._handle then
    self._handle:cancel()
    self._handle = nil
  end
  if state == "expired" then
    if rawequal(err, self._err) then
      error(new_error("timeout", "timed out"), 0)
    end
    -- The cancellation may not have reached an await point yet.
    take_own_cancel(self._task, self._err)
  end
end

---Ends the scope (what `<close>` does).
function Timeout:close()
  scope_exit(self, nil)
end

TimeoutMT.__close = scope_exit

function TimeoutMT:__tostring()
  return ("lunio.Timeout<%s%s>"):format(self._state,
    self._deadline and (", deadline " .. tostring(self._deadline)) or "")
end

-- ---------------------------------------------------------------------------
-- TaskGroup

---@class lunio.TaskGroup
local TaskGroup = {}
local TaskGroupMT = { __index = TaskGroup, __name = "lunio.TaskGroup" }

local function tg_abort(self)
  self._aborting = true
  local err = self._child_err
  local members = self._join:members()
  for i = 1, self._join:size() do
    local t = members[i]
    if not t:done() then cancel_with(t, err) end
  end
  if self._state == "open" and not self._parent_err then
    -- The block is still running: cancel it too, with our own error.
    self._parent_err = new_error("cancelled", "a task of its task group failed")
    cancel_with(self._parent, self._parent_err)
  end
end

-- Records the error of the failed child t, once.
local function tg_collect(self, t)
  if self._failed[t] then return end
  self._failed[t] = true
  local errors = self._errors
  errors[#errors + 1] = t:error()
end

-- A child raised (scheduled by the join soon after it failed).
local function tg_child_failed(self, t)
  if self._state == "closed" then return end
  tg_collect(self, t)
  if not self._aborting then tg_abort(self) end
end

---A task group for `<close>`: `local tg <close> = lunio.TaskGroup()`.
---Children spawned with tg:spawn() are waited for when the block exits. If
---a child fails, the other children and the block are cancelled and, once
---all are done, an error of kind "task_group" is raised whose `.errors`
---lists every child error (and the block's own error, if it failed with
---something other than a cancellation). When only the block fails, its
---error propagates unchanged after the children were cancelled and done.
---@return lunio.TaskGroup
function M.TaskGroup()
  local self = setmetatable({
    _parent = running_task("TaskGroup"),
    _errors = {}, _failed = {},
    _state = "open", _aborting = false,
    _child_err = new_error("cancelled", "cancelled by its task group"),
  }, TaskGroupMT)
  self._join = join("TaskGroup", "all", {}, 0, false, false,
    function(t) tg_child_failed(self, t) end)
  return self
end

---Spawns `fn(...)` as a child task and returns it. Raises "invalid_state"
---once the group is closed or shutting down after a failure.
---@param fn function|table a callable
---@return lunio.Task
function TaskGroup:spawn(fn, ...)
  if self._state == "closed" then
    error(new_error("invalid_state", "the task group is closed"), 2)
  end
  if self._aborting then
    error(new_error("invalid_state", "the task group is shutting down"), 2)
  end
  if not is_callable(fn) then argerror(1, "spawn", "callable expected, got " .. type(fn)) end
  local t = spawn(fn, ...)
  self._join:add(t)
  return t
end

-- "N error(s) in the task group", then each error on its own lines,
-- indented, with the traceback it carries (as Python prints an
-- ExceptionGroup).
local function group_message(list)
  local parts = { ("%d error(s) in the task group"):format(#list) }
  for i = 1, #list do
    local label = ("  [%d] "):format(i)
    local body = format_error(list[i]):gsub("\n", "\n" .. (" "):rep(#label))
    parts[i + 1] = label .. body
  end
  return concat(parts, "\n")
end

-- The traceback from the first frame outside this file: where the user's
-- block ended or called tg:wait(), not this module's __close. A block left
-- by an error has no frame left (Lua closes it after unwinding): false
-- then, so that the task does not attach this module's traceback instead.
local function user_traceback()
  local level = 2
  while true do
    local info = getinfo(level, "S")
    if info == nil then return false end
    if info.source ~= THIS_SOURCE and info.what ~= "C" then
      local tb = traceback(nil, level)
      return tb:find(":%d+: in ") ~= nil and tb
    end
    level = level + 1
  end
end

local function tg_exit(self, block_err)
  if self._state == "closed" then return end
  local me = current()
  if me ~= self._parent then
    error(new_error("invalid_state",
      "a task group must be closed by the task that created it"), 0)
  end
  self._state = "exiting"
  local parent_err = self._parent_err
  local saw_own = false
  if parent_err ~= nil and rawequal(block_err, parent_err) then
    saw_own, block_err = true, nil
  end
  if block_err ~= nil and not self._aborting then tg_abort(self) end
  local outer_cancel
  local j = self._join
  while j:pending() > 0 do
    local ok, err = j:wait()
    if not ok then
      parent_err = self._parent_err
      if parent_err ~= nil and rawequal(err, parent_err) then
        saw_own = true
      else -- cancelled from outside while waiting: cancel the children
        outer_cancel = outer_cancel or err
        if not self._aborting then tg_abort(self) end
      end
    end
  end
  self._state = "closed"
  j:close()
  -- A failure whose callback has not run yet (it fails as the block ends)
  -- is collected here; the callback then finds the group closed.
  local members = j:members()
  for i = 1, j:size() do
    local t = members[i]
    if t:state() == "failed" then tg_collect(self, t) end
  end
  parent_err = self._parent_err
  if parent_err ~= nil and not saw_own then take_own_cancel(me, parent_err) end
  local errors = self._errors
  if #errors > 0 then
    local list = {}
    for i = 1, #errors do list[i] = errors[i] end
    if block_err ~= nil and not is_error(block_err, "cancelled") then
      list[#list + 1] = block_err
    end
    error(new_error("task_group", group_message(list),
      { errors = list, traceback = user_traceback() }), 0)
  end
  if outer_cancel ~= nil then error(outer_cancel, 0) end
end

---Waits for every child, as the end of the `<close>` block does (raising
---"task_group" when a child failed); the group is closed afterwards.
---@async
function TaskGroup:wait()
  tg_exit(self, nil)
end
TaskGroup.close = TaskGroup.wait

TaskGroupMT.__close = tg_exit

---Number of children not finished yet.
---@return integer
function TaskGroup:pending()
  return self._join:pending()
end

function TaskGroupMT:__tostring()
  return ("lunio.TaskGroup<%s, %d task(s)>"):format(self._state, self._join:pending())
end

return M
