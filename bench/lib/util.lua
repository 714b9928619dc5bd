--- Helpers shared by the Lua benchmark programs (lunio, limit, luv,
--- cqueues). Plain Lua 5.4.
---
--- Each program prints exactly one line `RESULT key=value ...` on stdout;
--- bench/run parses it.
local M = {}

-- A monotonic wall clock in seconds. luv's hrtime is used only as a clock
-- (it is a stateless clock_gettime(CLOCK_MONOTONIC) call); cqueues'
-- monotime is the fallback; os.clock (CPU time) is the last resort.
do
  local ok, uv = pcall(require, "luv")
  if ok and uv.hrtime then
    local hrtime = uv.hrtime
    M.now = function() return hrtime() * 1e-9 end
    M.clock_name = "luv.hrtime"
  else
    local okc, cq = pcall(require, "cqueues")
    if okc and cq.monotime then
      M.now = cq.monotime
      M.clock_name = "cqueues.monotime"
    else
      M.now = os.clock
      M.clock_name = "os.clock"
    end
  end
end

--- CPU time (user + sys) of this process in seconds.
M.cpu = os.clock

--- The median of a list of numbers (sorts the list).
function M.median(list)
  table.sort(list)
  return list[(#list + 1) // 2]
end

--- Wall seconds that fn() takes, on clock (default M.now).
function M.timed(fn, clock)
  clock = clock or M.now
  local t0 = clock()
  fn()
  return clock() - t0
end

--- A field of /proc/self/status in bytes (VmRSS, VmHWM, ...).
function M.status(field)
  local f = assert(io.open("/proc/self/status", "r"))
  for line in f:lines() do
    local name, kb = line:match("^(%w+):%s+(%d+) kB")
    if name == field then
      f:close()
      return tonumber(kb) * 1024
    end
  end
  f:close()
  return nil
end

function M.rss() return M.status("VmRSS") end
function M.hwm() return M.status("VmHWM") end

--- Prints `RESULT k=v ...` with the keys in the order given:
--- M.result({"tasks_per_s", x}, {"elapsed_s", y}, ...)
function M.result(...)
  local parts = {}
  for i = 1, select("#", ...) do
    local kv = select(i, ...)
    local v = kv[2]
    if math.type(v) == "float" then
      v = string.format("%.6g", v)
    end
    parts[#parts + 1] = kv[1] .. "=" .. tostring(v)
  end
  io.write("RESULT ", table.concat(parts, " "), "\n")
  io.flush()
end

--- The W3 delays: n uniform random numbers in [0, 1) from a fixed seed,
--- the same sequence for every Lua program.
function M.delays(n, seed)
  math.randomseed(seed or 42)
  local d = {}
  for i = 1, n do d[i] = math.random() end
  return d
end

--- Integer command-line argument or default.
function M.arg_int(i, default)
  local v = arg and arg[i]
  return v and math.tointeger(tonumber(v)) or default
end

return M
