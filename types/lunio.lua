---@meta lunio
-- LuaLS definitions of lunio's public API (`require "lunio"`); the C core's
-- objects (Task, Future, Loop, Handle, Error) are in lunio.core.lua, HTTP in
-- lunio.http.lua, the busted helper in lunio.testing.lua. Point
-- lua-language-server at this directory: `"workspace.library":
-- ["<lunio>/types"]` (see docs/reference.md). spec/types_spec.lua checks
-- that every public name has a definition here.

---@class lunio.ExceptionContext
---@field message string what happened ("Task exception was never retrieved (Task-3)")
---@field error any the error value
---@field task? lunio.Task the failed task, if any
---@field traceback? string where it failed

---@class lunio
---@field version string lunio's version ("0.1.0")
---@field _VERSION string "lunio 0.1.0"
---@field http lunio.http the HTTP client (`require "lunio.http"`)
---@field testing lunio.testing busted helpers (`require "lunio.testing"`)
---@field coroutine lunio.coroutine drop-in `coroutine` library for coroutines inside tasks
---@field fs lunio.fs files and directories (`require "lunio.fs"`)
---@field signal lunio.signal POSIX signals (`require "lunio.signal"`)
---@field stream lunio.stream networking (`require "lunio.stream"`)
---@field subprocess lunio.subprocess child processes (`require "lunio.subprocess"`)
local lunio = {}

-- Running ---------------------------------------------------------------

---Runs `fn(...)` as the main task of the default loop until it finishes,
---cancels the tasks still pending, and returns `fn`'s results (raises its
---error). Inside the `lunio` command's main task, calls `fn(...)` in place.
---@param fn function|table a callable
---@param ... any arguments for `fn`
---@return any ...
function lunio.run(fn, ...) end

---A Task running `fn(...)`, started on the next scheduler tick.
---@param fn function|table a callable
---@param ... any
---@return lunio.Task
function lunio.create_task(fn, ...) end

---The same as `lunio.create_task`.
---@param fn function|table a callable
---@param ... any
---@return lunio.Task
function lunio.spawn(fn, ...) end

---Suspends the current task for `seconds` (0: let every other ready task
---run once) and returns `value`.
---@async
---@generic T
---@param seconds number
---@param value? T
---@return T
function lunio.sleep(seconds, value) end

---Loop time in seconds (monotonic).
---@return number
function lunio.now() end

---The running Task, or nil outside tasks.
---@return lunio.Task?
function lunio.current_task() end

---Tasks not yet done (running loop, else the default loop).
---@return lunio.Task[]
function lunio.all_tasks() end

---The running Loop; raises when none runs.
---@return lunio.Loop
function lunio.get_running_loop() end

---A fresh Loop, independent of the default one.
---@return lunio.Loop
function lunio.new_loop() end

---Sets the handler of errors nobody retrieved and of callback errors, for
---every loop without its own; nil restores the default (stderr).
---@param fn? fun(ctx: lunio.ExceptionContext)
function lunio.set_exception_handler(fn) end

---`{lunio=, lua=, libuv=, libcurl=}` version strings.
---@return {lunio: string, lua: string, libuv: string, libcurl: string}
function lunio.versions() end

---Resolves `host` (and `port`) on libuv's thread pool. Failures raise kind
---"eai_noname", "eai_again", ... with `.host`.
---@async
---@param host string
---@param port? integer
---@param opts? {family?: "any"|"inet"|"inet6", type?: "stream"|"dgram"}
---@return {address: string, family: "inet"|"inet6", port: integer}[]
function lunio.getaddrinfo(host, port, opts) end

---The host name and service of an IPv4 or IPv6 address.
---@async
---@param address string
---@param port? integer
---@return string host
---@return string service
function lunio.getnameinfo(address, port) end

---A TCP connection (see lunio.stream.open_connection).
---@async
---@param host string
---@param port integer
---@param opts? lunio.StreamOpts|{timeout?: number}
---@return lunio.Stream
function lunio.open_connection(host, port, opts) end

---@async
---@param path string
---@param opts? lunio.StreamOpts|{timeout?: number}
---@return lunio.Stream
function lunio.open_unix_connection(path, opts) end

---A TCP server, a task per connection (see lunio.stream.start_server).
---@param handler fun(stream: lunio.Stream)
---@param host string?
---@param port integer
---@param opts? lunio.StreamOpts|{backlog?: integer, reuseport?: boolean}
---@return lunio.Server
function lunio.start_server(handler, host, port, opts) end

---@param handler fun(stream: lunio.Stream)
---@param path string
---@param opts? lunio.StreamOpts|{backlog?: integer}
---@return lunio.Server
function lunio.start_unix_server(handler, path, opts) end

---@param host string?
---@param port integer
---@param opts? {max_datagram?: integer}
---@return lunio.UDP
function lunio.udp_bind(host, port, opts) end

---Runs `fn(...)` in a worker thread with its own Lua state and returns its
---results. `fn` may have no upvalue but _ENV; arguments and results are
---copied (nil, booleans, numbers, strings and tables of those). An error
---in the worker is raised here with the worker's traceback. See
---docs/threads.md.
---@async
---@param fn function
---@return any ...
function lunio.to_thread(fn, ...) end

---Opts in to glibc malloc settings for a busy loop (process-wide; never
---done on require; the lunio command calls it). True when applied.
---@return boolean
function lunio.tune_allocator() end

---Every task not yet done, as readable text: name, state, creation site
---and where it waits (format in docs/reference.md).
---@param loop? lunio.Loop
---@return string
function lunio.dump_tasks(loop) end

-- Errors ----------------------------------------------------------------

---True when `v` is a lunio error (of kind `kind`, if given).
---@param v any
---@param kind? string
---@return boolean
function lunio.is_error(v, kind) end

---Makes (does not raise) a lunio error: `lunio.error("timeout", "too slow", {url = u})`.
---@param kind string
---@param message? string
---@param fields? table extra fields copied into the error
---@return lunio.Error
function lunio.error(kind, message, fields) end

---As `pcall`, but a cancellation is re-raised (the same error object)
---instead of caught. Use it around awaits.
---@async
---@param fn function|table
---@param ... any
---@return boolean ok
---@return any ... results, or the error
function lunio.pcall(fn, ...) end

---As `xpcall`, but a cancellation is re-raised instead of caught, and
---`handler` is not called for it.
---@async
---@param fn function|table
---@param handler fun(err: any): any
---@param ... any
---@return boolean ok
---@return any ... results, or what handler returned
function lunio.xpcall(fn, handler, ...) end

---True when `err` is a cancellation error (kind "cancelled").
---@param err any
---@return boolean
function lunio.is_cancelled(err) end

-- Combinators and structured concurrency ---------------------------------

---Waits for every argument (Task, Future or function to spawn); returns
---the first result of each, in order. The first error raises at once.
---`gather(list [, opts])` returns a list instead; `opts.return_errors`
---puts errors in the list instead of raising.
---@async
---@param ... lunio.Task|lunio.Future|function
---@return any ...
---@overload fun(list: (lunio.Task|lunio.Future|function)[], opts?: {return_errors?: boolean}): any[]
function lunio.gather(...) end

---Waits until `opts.return_when` holds ("all_completed", default;
---"first_completed"; "first_error") or `opts.timeout` passed. Never raises
---the tasks' errors, never cancels them.
---@async
---@param list (lunio.Task|lunio.Future|function)[]
---@param opts? {timeout?: number, return_when?: "all_completed"|"first_completed"|"first_error"}
---@return lunio.Task[] done
---@return lunio.Task[] pending
function lunio.wait(list, opts) end

---The results of the task (or function, spawned), or an error of kind
---"timeout" after `seconds` (the task is cancelled and waited for).
---@async
---@param task_or_fn lunio.Task|lunio.Future|function
---@param seconds? number nil: no limit
---@return any ...
function lunio.wait_for(task_or_fn, seconds) end

---Awaits the task; cancelling the awaiting task does not cancel it.
---@async
---@param task_or_fn lunio.Task|lunio.Future|function
---@return any ...
function lunio.shield(task_or_fn) end

---`for t in lunio.as_completed(list [, timeout]) do`: each task as it
---finishes. Raises "timeout" when the next one is not done in time.
---@async
---@param list (lunio.Task|lunio.Future|function)[]
---@param timeout? number
---@return fun(): lunio.Task?
function lunio.as_completed(list, timeout) end

---A deadline scope for `<close>`: `local _ <close> = lunio.timeout(2)`;
---the block fails with kind "timeout" when the deadline passes inside it.
---@param seconds? number nil: no deadline
---@return lunio.Timeout
function lunio.timeout(seconds) end

---A task group for `<close>`: `local tg <close> = lunio.TaskGroup()`.
---@return lunio.TaskGroup
function lunio.TaskGroup() end

-- Synchronisation ---------------------------------------------------------

---A Future: a result that some task sets later.
---@return lunio.Future
function lunio.Future() end

---@return lunio.Event
function lunio.Event() end

---@return lunio.Lock
function lunio.Lock() end

---A semaphore with `n` units (default 1).
---@param n? integer
---@return lunio.Semaphore
function lunio.Semaphore(n) end

---A semaphore whose release() raises "invalid_state" past its initial value.
---@param n? integer
---@return lunio.Semaphore
function lunio.BoundedSemaphore(n) end

---A condition variable bound to `lock` (a new Lock by default).
---@param lock? lunio.Lock
---@return lunio.Condition
function lunio.Condition(lock) end

---A FIFO queue; `maxsize` nil or 0: unbounded.
---@param maxsize? integer
---@return lunio.Queue
function lunio.Queue(maxsize) end

---A LIFO queue.
---@param maxsize? integer
---@return lunio.Queue
function lunio.LifoQueue(maxsize) end

---Smallest item first (`<`; plain tables are `{priority, value}` pairs).
---@param maxsize? integer
---@return lunio.Queue
function lunio.PriorityQueue(maxsize) end

-- Classes -------------------------------------------------------------------

---A deadline scope (lunio.timeout).
---@class lunio.Timeout
local Timeout = {}
---Moves the deadline to `seconds` from now; nil removes it.
---@param seconds? number
function Timeout:reschedule(seconds) end
---True once the deadline passed and the scope cancelled the task.
---@return boolean
function Timeout:expired() end
---The deadline in loop time, or nil.
---@return number?
function Timeout:when() end
---Ends the scope (what `<close>` does).
function Timeout:close() end

---A task group (lunio.TaskGroup).
---@class lunio.TaskGroup
local TaskGroup = {}
---Spawns `fn(...)` as a child task.
---@param fn function|table
---@param ... any
---@return lunio.Task
function TaskGroup:spawn(fn, ...) end
---Waits for every child now, as the end of the block does, and closes the group.
---@async
function TaskGroup:wait() end
---The same as wait().
---@async
function TaskGroup:close() end
---Number of children not finished.
---@return integer
function TaskGroup:pending() end

---What acquire() returns; closing it releases once.
---@class lunio.Guard
local Guard = {}
function Guard:release() end
function Guard:close() end

---@class lunio.Event
local Event = {}
---Sets the flag and wakes every waiter.
function Event:set() end
function Event:clear() end
---@return boolean
function Event:is_set() end
---Waits until the flag is set.
---@async
---@return true
function Event:wait() end

---@class lunio.Lock
local Lock = {}
---Acquires (FIFO); `local _ <close> = lock:acquire()`.
---@async
---@return lunio.Guard
function Lock:acquire() end
function Lock:release() end
---@return boolean
function Lock:locked() end

---@class lunio.Semaphore
local Semaphore = {}
---Takes a unit, waiting (FIFO) at 0.
---@async
---@return lunio.Guard
function Semaphore:acquire() end
function Semaphore:release() end
---Units left.
---@return integer
function Semaphore:value() end
---True at 0.
---@return boolean
function Semaphore:locked() end

---@class lunio.Condition
local Condition = {}
---@async
---@return lunio.Guard
function Condition:acquire() end
function Condition:release() end
---@return boolean
function Condition:locked() end
---Releases the lock, waits for notify(), re-acquires the lock.
---@async
---@return true
function Condition:wait() end
---Waits until `predicate()` is true; returns its value.
---@async
---@param predicate fun(): any
---@return any
function Condition:wait_for(predicate) end
---Wakes up to `n` (default 1) waiters.
---@param n? integer
function Condition:notify(n) end
function Condition:notify_all() end

---@class lunio.Queue
---@field maxsize integer 0 = unbounded
local Queue = {}
---Puts `v`, waiting while full; "closed" after shutdown().
---@async
---@param v any
function Queue:put(v) end
---Removes and returns an item, waiting while empty; "closed" once shut down and empty.
---@async
---@return any
function Queue:get() end
---Raises "queue_full" when full.
---@param v any
function Queue:put_nowait(v) end
---Raises "queue_empty" when empty.
---@return any
function Queue:get_nowait() end
---`for item in q:iter() do`: items until the queue is shut down and empty.
---@async
---@return fun(q: lunio.Queue): any
---@return lunio.Queue
function Queue:iter() end
---@return integer
function Queue:qsize() end
---@return boolean
function Queue:empty() end
---@return boolean
function Queue:full() end
---Marks one item as processed (for join()).
function Queue:task_done() end
---Waits until task_done() was called for every item put.
---@async
function Queue:join() end
---Stops puts; getters drain what is left (nothing with `immediate`).
---@param immediate? boolean
function Queue:shutdown(immediate) end
---@return boolean
function Queue:is_shutdown() end

---The standard `coroutine` library for coroutines used inside tasks: an
---await inside suspends the whole task.
---@class lunio.coroutine
local colib = {}
---@param fn function
---@return thread
function colib.create(fn) end
---@param co thread
---@return boolean ok
---@return any ...
function colib.resume(co, ...) end
---@param fn function
---@return fun(...): ...
function colib.wrap(fn) end
---@return any ...
function colib.yield(...) end
---@param co thread
---@return "running"|"suspended"|"normal"|"dead"
function colib.status(co) end
---@return thread running
---@return boolean ismain
function colib.running() end
---@return boolean
function colib.isyieldable() end
---@param co thread
---@return boolean ok
---@return any err
function colib.close(co) end

return lunio
