---@meta lunio.signal
-- LuaLS definitions of lunio.signal (`require "lunio.signal"`, also
-- `require("lunio").signal`). See docs/signals.md.

---A registered handler (`signal.on`), `<close>`-able.
---@class lunio.SignalHandler
local SignalHandler = {}

---Stops the handler.
function SignalHandler:close() end

---Whether it still runs for deliveries.
---@return boolean
function SignalHandler:active() end

---@class lunio.signal
local signal = {}

---Waits for the next delivery of the signal `name` ("SIGTERM", ...) and
---returns `name`; every waiter sees each delivery.
---@async
---@param name string
---@return string
function signal.wait(name) end

---Runs `fn(name)` as a new task for each delivery of `name`, until the
---handler is closed.
---@param name string
---@param fn fun(name: string)
---@return lunio.SignalHandler
function signal.on(name, fn) end

return signal
