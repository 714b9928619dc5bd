--- lunio.util: small helpers shared by lunio's Lua modules (not public API).
local core = require "lunio.core"

local type, getmetatable, error = type, getmetatable, error

local util = {}

---True for functions and values whose metatable has `__call`.
---@param v any
---@return boolean
function util.is_callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

---The running task; raises, naming `fname`, outside tasks. `level` is the
---error level as seen from the caller of running_task (default: its caller).
---@param fname string
---@param level? integer
---@return lunio.Task
function util.running_task(fname, level)
  local task = core.current()
  if task == nil then
    error(("'%s' called outside a running task (start one with lunio.run "
      .. "or lunio.create_task)"):format(fname), (level or 2) + 1)
  end
  return task
end

return util
