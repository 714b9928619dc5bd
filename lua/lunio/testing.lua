--- lunio.testing: run busted tests as lunio tasks.
--
--   it("works", lunio.testing.async(function() ... end))
--
-- Each test body runs as the main task of a fresh loop, with a time limit,
-- and fails when it leaves tasks, scheduled callbacks, active libuv handles,
-- unclosed streams, servers or UDP sockets, or open file descriptors
-- behind.
local core = require "lunio.core"

local testing = {}

-- Number of open file descriptors of this process (from /proc/self/fd).
local open_fds = core.open_fds
testing.open_fds = open_fds

-- libuv opens a few process-wide descriptors with the first loop of the
-- process and keeps them: open them now so no test is blamed for them.
core.new_loop():close()

local function describe_tasks(list)
  local names = {}
  for i = 1, #list do names[i] = tostring(list[i]) end
  return table.concat(names, ", ")
end

---Wraps `fn` into a function for busted's `it`.
---@param fn function the test body; runs as a task
---@param opts? {timeout?: number, virtual_time?: boolean, check_leaks?: boolean}
---@return function
function testing.async(fn, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'async' (table expected, got " .. type(opts) .. ")", 2)
  end
  opts = opts or {}
  local timeout = opts.timeout or 5
  if type(fn) ~= "function" then
    error("bad argument #1 to 'async' (function expected, got " .. type(fn) .. ")", 2)
  end
  if type(timeout) ~= "number" or timeout <= 0 then
    error("bad argument #2 to 'async' (timeout must be a positive number)", 2)
  end
  local check_leaks = opts.check_leaks ~= false
  return function(...)
    if check_leaks then
      -- Close what unreachable file handles still hold, so that the
      -- collection after the body cannot hide a leak of the body's own.
      collectgarbage()
      collectgarbage()
    end
    local fds_before = check_leaks and open_fds()
    local loop = core.new_loop()
    loop:set_virtual_time(opts.virtual_time and true or false)
    local problems = {}
    local ok, err = pcall(loop.run, loop, function(...)
      local main = core.current()
      loop:set_watchdog(timeout, function()
        main:cancel(("test timed out after %g s"):format(timeout))
      end)
      fn(...)
      loop:set_watchdog(nil)
      if check_leaks then
        local left = {}
        for _, t in ipairs(loop:all_tasks()) do
          if t ~= main then left[#left + 1] = t end
        end
        if #left > 0 then
          problems[#problems + 1] = #left .. " task(s) still pending: " .. describe_tasks(left)
        end
        local handles = loop:scheduled_handles()
        if handles > 0 then
          problems[#problems + 1] = handles .. " scheduled callback(s) left"
        end
      end
    end, ...)
    if ok and check_leaks then
      local active = loop:active_handles()
      if active > 0 then
        problems[#problems + 1] = active .. " active libuv handle(s) left"
      end
      local streams = core.stream.open_count(loop)
      if streams > 0 then
        problems[#problems + 1] = streams
          .. " stream(s), server(s) or UDP socket(s) left open"
      end
    end
    loop:close()
    if not ok then
      if core.is_error(err, "cancelled") and err.message:find("timed out", 1, true) then
        error(core.new_error("timeout", err.message), 0)
      end
      error(err, 0)
    end
    if check_leaks then
      collectgarbage()
      collectgarbage()
      local fds_after = open_fds()
      if fds_after > fds_before then
        problems[#problems + 1] = (fds_after - fds_before) .. " file descriptor(s) left open"
      end
    end
    if #problems > 0 then
      error("test left resources behind: " .. table.concat(problems, "; "), 0)
    end
  end
end

return testing
