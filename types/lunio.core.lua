---@meta lunio.core
-- LuaLS definitions for the C core of lunio (`require "lunio.core"`).
-- Users program against `require "lunio"` (lua/lunio/init.lua); this file
-- lets editors complete and check the objects the core returns. Point
-- LuaLS at it with `"workspace.library": ["<lunio>/types"]`.

---@class lunio.Error
---@field kind string
---@field message string
---@field traceback? string
---@field errors? any[] kind "task_group": every child error

---@class lunio.Handle
local Handle = {}
---@return boolean cancelled true if the call was prevented
function Handle:cancel() end
---@return boolean
function Handle:cancelled() end
---@return number? when the deadline, while scheduled on the timer heap
function Handle:when() end

---@class lunio.Future
local Future = {}
---@async
---@return any ...
function Future:await() end
---@param msg? string
---@return boolean
function Future:cancel(msg) end
---@return boolean
function Future:done() end
---@return boolean
function Future:cancelled() end
---@return any ...
function Future:result() end
---@return any? err
function Future:error() end
---@param fn fun(f: lunio.Future)
function Future:add_done_callback(fn) end
---@param fn function
---@return integer removed
function Future:remove_done_callback(fn) end
---@return string state "pending"|"running"|"waiting"|"done"|"failed"|"cancelled"
function Future:state() end
---@param ... any
function Future:set_result(...) end
---@param err any
function Future:set_error(err) end

---@class lunio.Task: lunio.Future
---@field name string
local Task = {}
---@param name string
function Task:set_name(name) end
---@return string
function Task:traceback() end
---Where the task was created (a traceback), recorded in debug mode; nil
---otherwise.
---@return string?
function Task:created_at() end

---@class lunio.Loop
local Loop = {}
---@param fn function
---@return any ...
function Loop:run(fn, ...) end
---@return number
function Loop:time() end
---@return lunio.Handle
function Loop:call_soon(fn, ...) end
---@param delay number
---@return lunio.Handle
function Loop:call_later(delay, fn, ...) end
---@param when number
---@return lunio.Handle
function Loop:call_at(when, fn, ...) end
---@return lunio.Task
function Loop:create_task(fn, ...) end
function Loop:stop() end
---@return boolean
function Loop:is_running() end
---@return boolean
function Loop:is_closed() end
function Loop:close() end
---@return lunio.Task[]
function Loop:all_tasks() end
---@return integer
function Loop:scheduled_handles() end
---@return integer
function Loop:active_handles() end
---@param fn? fun(ctx: table)
function Loop:set_exception_handler(fn) end
---@param on boolean
function Loop:set_virtual_time(on) end
---@param seconds? number
---@param fn? function
function Loop:set_watchdog(seconds, fn) end
---@param on boolean
function Loop:set_signals(on) end
---Number of registered resources (sessions, streams, files ...) still open.
---@return integer
function Loop:open_resources() end
---Debug mode for this loop (LUNIO_DEBUG=1 turns it on for every loop):
---slow-step warnings beyond `slow_seconds` (default 0.1, LUNIO_DEBUG_SLOW),
---creation sites of tasks, a report of what is left at close.
---@param on boolean
---@param slow_seconds? number
function Loop:set_debug(on, slow_seconds) end
---@return boolean on
---@return number slow_seconds
function Loop:debug() end
---Whether a SIGINT arrived during the current (or last) run().
---@return boolean
function Loop:interrupted() end

local core = {}
---@return lunio.Loop
function core.new_loop() end
---@return lunio.Loop
function core.default_loop() end
---@return lunio.Loop?
function core.running_loop() end
---@param fn? fun(ctx: table)
function core.set_exception_handler(fn) end
---@return lunio.Task
function core.spawn(fn, ...) end
---@async
---@param seconds number
---@param value? any
---@return any value
function core.sleep(seconds, value) end
---@async
---@return boolean ok
---@return any ...
function core.park() end
---@param task lunio.Task
---@return boolean woken
function core.wake(task, ...) end
---@return lunio.Task?
function core.current() end
---@param task lunio.Task|lunio.Future
---@param err any
---@return boolean
function core.cancel_with(task, err) end
---@param task lunio.Task
---@param err? any
---@return boolean
function core.uncancel(task, err) end
---@param task lunio.Task
---@return any? err
function core.pending_cancel(task) end
---@return number
function core.now() end
---@return lunio.Future
function core.Future() end
---@param kind string
---@param message? string
---@param fields? table
---@return lunio.Error
function core.new_error(kind, message, fields) end
---@param v any
---@param kind? string
---@return boolean
function core.is_error(v, kind) end
---@return integer?
function core.open_fds() end
---@return {in_use: integer, free: integer, mapped: integer}?
function core.heap_info() end
---@return boolean
function core.heap_trim() end
core.version = "0.1.0"
core.libuv_version = ""
core.libcurl_version = ""
core.coroutine = { create = coroutine.create, resume = coroutine.resume }
core.http = {}

return core
