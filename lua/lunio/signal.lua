--- lunio.signal: POSIX signals as awaitable events and handler tasks.
--
-- `signal.wait(name)` suspends the calling task until the next delivery of
-- the signal; `signal.on(name, fn)` runs `fn(name)` as a new task for every
-- delivery until its handler is closed. Names are strings such as
-- "SIGTERM", "SIGHUP", "SIGUSR1". A signal is caught only while some task
-- waits for it or a handler is registered; otherwise it has its default
-- action. SIGINT keeps its meaning under `lunio.run` (the first one
-- cancels the main task) and is seen by these watchers as well. The
-- watchers are in src/signal.c; reference and guide: docs/signals.md.
local core = require "lunio.core"

local csignal = core.signal

local signal = {}

---A registered handler (`signal.on`): `close()` (also `<close>`) stops it;
---`active()` tells whether it still runs for deliveries.
---@class lunio.SignalHandler
---@field close fun(self: lunio.SignalHandler)
---@field active fun(self: lunio.SignalHandler): boolean

---Waits for the next delivery of the signal `name` ("SIGTERM", ...) and
---returns `name`. Several tasks may wait for the same signal: each
---delivery wakes them all. Unknown names, SIGKILL, SIGSTOP and the fault
---signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL) are bad arguments.
---@async
---@type fun(name: string): string
signal.wait = csignal.wait

---Runs `fn(name)` as a new task for each delivery of the signal `name`,
---until the returned handler is closed (`handler:close()` or `<close>`).
---Usable outside tasks too (the handler belongs to the running loop, or
---the default one). A handler stays registered when its result is dropped.
---@type fun(name: string, fn: fun(name: string)): lunio.SignalHandler
signal.on = csignal.on

return signal
