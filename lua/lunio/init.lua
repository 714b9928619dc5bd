--- lunio: asyncio for Lua 5.4.
--
-- This module is the public face of lunio. The scheduler, tasks, futures,
-- timers and the HTTP engine live in the C module `lunio.core`; this file
-- binds them to the names of the API contract (docs/reference.md) and adds
-- the few policies that read better in Lua. Submodules load on first use:
-- `lunio.http`, `lunio.testing`, and the combinators and synchronisation
-- primitives (`lunio.gather`, `lunio.TaskGroup`, `lunio.Queue`, ...).
local core = require "lunio.core"

local type, error = type, error
local tostring = tostring

local lunio = {
  _VERSION = "lunio " .. core.version,
  version = core.version,
}

local util = require "lunio.util"
local is_callable = util.is_callable
local run_in_place = util.run_in_place

local arg_error = util.arg_error

local function is_cancelled(err)
  return core.is_error(err, "cancelled")
end

-- The results of fn in place, or its error; a cancellation that a SIGINT
-- caused becomes kind "interrupted", as loop:run() raises it.
local function finish_in_place(loop, ok, ...)
  if ok then return ... end
  local err = ...
  if is_cancelled(err) and loop:interrupted() then
    error(core.new_error("interrupted", "interrupted by SIGINT"), 0)
  end
  error(err, 0)
end

---Runs `fn(...)` as the main task of the default loop and returns its
---results. Inside the `lunio` command's main task, calls `fn(...)` in
---place. See docs/reference.md "Running".
---@param fn function|table a callable
---@return any ...
function lunio.run(fn, ...)
  if not is_callable(fn) then
    arg_error(1, "run", "callable expected, got " .. type(fn))
  end
  local loop = core.running_loop()
  if loop then
    local task = core.current()
    if task ~= nil and run_in_place[task] then
      return finish_in_place(loop, pcall(fn, ...))
    end
    error("lunio.run: a loop is already running (inside a task, call the "
      .. "function or spawn it and await the task instead)", 2)
  end
  return core.default_loop():run(fn, ...)
end

---Schedules `fn(...)` as a new Task; it starts on the next scheduler tick.
---@param fn function|table a callable
---@return lunio.Task
lunio.create_task = core.spawn
lunio.spawn = core.spawn

---Suspends the current task for `seconds` (0: let every ready task run once)
---and returns `value`.
---@async
lunio.sleep = core.sleep

---Loop time in seconds (monotonic).
lunio.now = core.now

---The running Task, or nil outside tasks.
lunio.current_task = core.current

lunio.Future = core.Future
lunio.new_loop = core.new_loop
lunio.set_exception_handler = core.set_exception_handler

---True when `err` is a lunio error (of the given kind, if any).
lunio.is_error = core.is_error

---Makes a lunio error table: `lunio.error("timeout", "too slow", {url=u})`.
lunio.error = core.new_error

-- Cancellation-safe catching. Lua's pcall catches everything, also the
-- "cancelled" error that stops a task (like Python's `except BaseException`);
-- these re-raise a cancellation instead, unchanged: timeout scopes and task
-- groups recognise their own cancellation by identity. Lua 5.4's pcall and
-- xpcall are yieldable, so awaits inside still work (no C boundary here).
local is_error = core.is_error

---True when `err` is a cancellation error (kind "cancelled").
---@param err any
---@return boolean
lunio.is_cancelled = is_cancelled

local function pcall_finish(ok, ...)
  if not ok and is_error((...), "cancelled") then error((...), 0) end
  return ok, ...
end

---As `pcall`, but a cancellation is re-raised instead of caught. Use it
---around awaits.
---@async
---@param fn function|table
---@return boolean ok
---@return any ...
function lunio.pcall(fn, ...)
  return pcall_finish(pcall(fn, ...))
end

local function xpcall_finish(state, ok, ...)
  if not ok and state.cancelled then error((...), 0) end
  return ok, ...
end

---As `xpcall`, but a cancellation is re-raised instead of caught, and
---`handler` is not called for it.
---@async
---@param fn function|table
---@param handler function
---@return boolean ok
---@return any ...
function lunio.xpcall(fn, handler, ...)
  if not is_callable(handler) then
    arg_error(2, "xpcall", "function expected, got " .. type(handler))
  end
  local state = {}
  return xpcall_finish(state, xpcall(fn, function(err)
    if is_error(err, "cancelled") then
      state.cancelled = true
      return err
    end
    return handler(err)
  end, ...))
end

---The running Loop; raises when no loop runs.
function lunio.get_running_loop()
  local loop = core.running_loop()
  if not loop then error("no running loop", 2) end
  return loop
end

---Tasks not yet done, on the running loop (or the default one).
function lunio.all_tasks()
  return (core.running_loop() or core.default_loop()):all_tasks()
end

local FAMILIES = { any = true, inet = true, inet6 = true }
local SOCKTYPES = { stream = true, dgram = true }

---Resolves `host` (and `port`) on libuv's thread pool: a list of
---`{address=, family=, port=}` (family "inet" or "inet6"). `opts.family`
---("inet", "inet6" or "any") and `opts.type` ("stream", the default, or
---"dgram") narrow the answer. Failures raise kind "eai_noname",
---"eai_again", ... with `.host`.
---@async
---@param host string
---@param port? integer
---@param opts? {family?: "any"|"inet"|"inet6", type?: "stream"|"dgram"}
---@return {address: string, family: string, port: integer}[]
function lunio.getaddrinfo(host, port, opts)
  if type(host) ~= "string" then
    arg_error(1, "getaddrinfo", "string expected, got " .. type(host))
  end
  if opts ~= nil and type(opts) ~= "table" then
    arg_error(3, "getaddrinfo", "table expected, got " .. type(opts))
  end
  local family, socktype = opts and opts.family, opts and opts.type
  if family ~= nil and not FAMILIES[family] then
    arg_error(3, "getaddrinfo", "family must be \"inet\", \"inet6\" or \"any\"")
  end
  if socktype ~= nil and not SOCKTYPES[socktype] then
    arg_error(3, "getaddrinfo", "type must be \"stream\" or \"dgram\"")
  end
  return core.getaddrinfo(host, port, family, socktype)
end

---The host name (and service) of an IPv4 or IPv6 address: `host, service`.
---@async
---@param address string
---@param port? integer
---@return string host
---@return string service
lunio.getnameinfo = core.getnameinfo

---Runs `fn(...)` in a worker thread, in a Lua state of its own, and returns
---its results (issue 11; docs/threads.md). `fn` may use globals (`_ENV`)
---but no other upvalues; arguments and results are copied: nil, booleans,
---numbers, strings and tables of those. An error in `fn` is raised here,
---with the worker's traceback. The loop's own pool of threads (at most
---`LUNIO_THREADS`, default the number of CPUs) keeps libuv's pool free
---for files and DNS.
---@async
---@type fun(fn: function, ...: any): ...: any
lunio.to_thread = core.to_thread

---Opts in to glibc malloc settings that suit a busy loop (16 MiB of heap
---slack, 1 MiB mmap threshold): process-wide, so never done on `require`.
---The `lunio` command calls it. Returns true when applied.
---@return boolean
lunio.tune_allocator = core.tune_allocator

-- dump_tasks: every task not done, like `python -m asyncio ps`.

-- A traceback string as indented lines, without the "stack traceback:"
-- header and the "[C]: in ?" at the bottom of every task.
local function indent_traceback(tb, prefix)
  local out = {}
  for line in tb:gmatch("[^\n]+") do
    line = line:gsub("^\t", "")
    if line ~= "stack traceback:" then out[#out + 1] = line end
  end
  if out[#out] == "[C]: in ?" then out[#out] = nil end
  for i = 1, #out do out[i] = prefix .. out[i] end
  return table.concat(out, "\n")
end

local function created_at(task)
  local method = task.created_at
  if method == nil then return nil, "unknown" end
  local tb = method(task)
  if type(tb) ~= "string" or tb == "" then
    return nil, "unknown (recorded with LUNIO_DEBUG=1)"
  end
  return tb
end

local function waiting_at(task, state)
  if state == "waiting" then
    local tb = task:traceback()
    if tb ~= "" then return tb end
    return nil, "unknown"
  elseif state == "pending" then
    return nil, "not started yet"
  elseif state == "running" then
    return nil, "running now"
  end
  return nil, state
end

---Every task not yet done, as readable text: name, state, where it was
---created (when the core records it) and where it is waiting. Format in
---docs/reference.md ("Debugging").
---@param loop? lunio.Loop default: the running loop, else the default loop
---@return string
function lunio.dump_tasks(loop)
  if loop == nil then
    loop = core.running_loop() or core.default_loop()
  else
    local mt = getmetatable(loop)
    if type(loop) ~= "userdata" or type(mt) ~= "table" or rawget(mt, "__name") ~= "lunio.Loop" then
      arg_error(1, "dump_tasks", "lunio.Loop expected, got " .. type(loop))
    end
  end
  local tasks = loop:all_tasks()
  local lines = { ("%d task(s)"):format(#tasks) }
  for i = 1, #tasks do
    local t = tasks[i]
    local state = t:state()
    local created, created_note = created_at(t)
    local waiting, waiting_note = waiting_at(t, state)
    lines[#lines + 1] = ("%s (%s)"):format(t.name, state)
    if created then
      lines[#lines + 1] = "  created at:\n" .. indent_traceback(created, "    ")
    else
      lines[#lines + 1] = "  created at: " .. created_note
    end
    if waiting then
      lines[#lines + 1] = "  waiting at:\n" .. indent_traceback(waiting, "    ")
    else
      lines[#lines + 1] = "  waiting at: " .. waiting_note
    end
  end
  return table.concat(lines, "\n")
end

---Versions of lunio, Lua, libuv and libcurl.
function lunio.versions()
  return {
    lunio = core.version,
    lua = _VERSION,
    libuv = core.libuv_version,
    libcurl = core.libcurl_version,
  }
end

-- lunio.coroutine: the standard library, except that create/resume/wrap
-- let awaits inside the coroutine suspend the whole task.
local co_resume, co_create = core.coroutine.resume, core.coroutine.create
local co_close = coroutine.close

local function wrap(fn)
  local co = co_create(fn)
  local function finish(ok, ...)
    if not ok then
      local err = ...
      co_close(co)
      error(err, 0)
    end
    return ...
  end
  return function(...)
    return finish(co_resume(co, ...))
  end
end

lunio.coroutine = {
  create = co_create,
  resume = co_resume,
  wrap = wrap,
  yield = coroutine.yield,
  status = coroutine.status,
  running = coroutine.running,
  isyieldable = coroutine.isyieldable,
  close = coroutine.close,
}

-- Submodules and the Lua-level parts of the API, loaded on first use so
-- that `require "lunio"` stays cheap.
local lazy = {
  http = function() return require "lunio.http" end,
  stream = function() return require "lunio.stream" end,
  testing = function() return require "lunio.testing" end,
  fs = function() return require "lunio.fs" end, -- issue 11
  signal = function() return require "lunio.signal" end, -- issue 11
  subprocess = function() return require "lunio.subprocess" end, -- issue 11
}
-- lunio.stream: open_connection, start_server, open_unix_connection,
-- start_unix_server, udp_bind.
local lazy_sets = { "lunio.sync", "lunio.combinators", "lunio.stream" }

setmetatable(lunio, {
  __index = function(t, k)
    local load = lazy[k]
    if load then
      local v = load()
      rawset(t, k, v)
      return v
    end
    for i = 1, #lazy_sets do
      local ok, mod = pcall(require, lazy_sets[i])
      if ok and mod[k] ~= nil then
        for name, v in pairs(mod) do
          if rawget(t, name) == nil then rawset(t, name, v) end
        end
        return mod[k]
      elseif not ok and not tostring(mod):find("module '" .. lazy_sets[i]
        .. "' not found", 1, true) then
        error(mod, 2)
      end
    end
    return nil
  end,
})

return lunio
