--- lunio.util: small helpers shared by lunio's Lua modules (not public API).
local core = require "lunio.core"

local type, getmetatable, error, pcall = type, getmetatable, error, pcall
local tostring = tostring

local util = {}

---Tasks inside which `lunio.run(fn, ...)` calls `fn(...)` in place instead
---of raising: the `lunio` command's main task (cli.lua marks it), so that a
---script written for `lua5.4` runs unchanged under `lunio`. Weak keys.
util.run_in_place = setmetatable({}, { __mode = "k" })

---True for functions and values whose metatable has `__call`.
---@param v any
---@return boolean
function util.is_callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

---Raises "bad argument #n to 'fname' (msg)" at `level` as seen from the
---caller of arg_error (default 2: the caller of the function that checks).
---@param n integer
---@param fname string
---@param msg string
---@param level? integer
function util.arg_error(n, fname, msg, level)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), (level or 2) + 1)
end

---True for a number of seconds: not NaN, >= 0.
---@param v any
---@return boolean
function util.is_seconds(v)
  return type(v) == "number" and v == v and v >= 0
end

local timeout_scope -- lunio.combinators.timeout (which requires this module)

---`fn(...)` under a timeout scope of `secs` seconds (nil: no scope); a
---timeout raises kind "timeout" from the scope.
---@async
function util.within(secs, fn, ...)
  if secs == nil then return fn(...) end
  timeout_scope = timeout_scope or require("lunio.combinators").timeout
  local _ <close> = timeout_scope(secs)
  return fn(...)
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

local function format_table(err)
  if core.is_error(err) then return tostring(err) end -- "kind: message" + traceback
  local s
  local mt = getmetatable(err)
  if type(mt) == "table" and mt.__tostring ~= nil then
    s = tostring(err)
  else
    local kind, message = err.kind, err.message
    if type(kind) == "string" and type(message) == "string" then
      s = kind .. ": " .. message
    elseif type(message) == "string" then
      s = message
    else
      s = tostring(err)
    end
  end
  local tb = err.traceback
  if type(tb) == "string" and tb ~= "" and not s:find(tb, 1, true) then
    s = s .. "\n" .. tb
  end
  return s
end

---Formats an error value for people, the one formatter of lunio's Lua side:
---strings as they are; lunio errors by their `__tostring` (`kind: message`
---and the traceback they carry); other tables with a `__tostring` by it, and
---without one as `kind: message` (or `message`) when those are strings,
---each followed by the table's `.traceback` string if it has one; other
---values with `tostring`. Never raises.
---@param err any
---@return string
function util.format_error(err)
  if type(err) ~= "table" then
    local ok, s = pcall(tostring, err)
    return ok and s or ("(%s error value)"):format(type(err))
  end
  local ok, s = pcall(format_table, err)
  if ok and type(s) == "string" then return s end
  return "(error object that cannot be printed: "
    .. (type(s) == "string" and s or type(s)) .. ")"
end

return util
