---@meta lunio.testing
-- LuaLS definitions of lunio's busted helpers (`require "lunio.testing"`,
-- also `require("lunio").testing`). See docs/cli.md.

---@class lunio.testing.AsyncOptions
---@field timeout? number seconds of real time before the test fails (default 5)
---@field virtual_time? boolean timers on a virtual clock that jumps ahead
---@field check_leaks? boolean fail on tasks, handles or fds left behind (default true)

---@class lunio.testing
local testing = {}

---A function for busted's `it` that runs `fn` as the main task of a fresh
---loop, with a time limit and leak checks.
---@param fn async fun(...)
---@param opts? lunio.testing.AsyncOptions
---@return function
function testing.async(fn, opts) end

---Number of open file descriptors of this process (nil where unknown).
---@return integer?
function testing.open_fds() end

return testing
