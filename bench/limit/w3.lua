-- W3 limit: memory and CPU of N suspended plain coroutines, each parked
-- at a yield holding its delay (what a sleeping task needs at minimum),
-- then woken in deadline order from a plain Lua binary heap and a busy
-- wait on the clock (no event loop: this gives a wall floor, not a
-- realistic CPU figure, so only parking CPU is reported as cpu_park_s).
--   lua5.4 bench/limit/w3.lua [N]
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
package.path = dir .. "/../lib/?.lua;" .. package.path
local util = require "util"

local N = util.arg_int(1, 100000)
local delays = util.delays(N, 42)
local create, resume, yield = coroutine.create, coroutine.resume,
  coroutine.yield

local function sleeper(d)
  yield(d)
  return d
end

collectgarbage()
collectgarbage()
local rss0 = util.rss()
local cpu0, t0 = util.cpu(), util.now()

-- Park all: each coroutine runs until its yield and is kept alive.
local cos = {}
for i = 1, N do
  local co = create(sleeper)
  resume(co, delays[i])
  cos[i] = co
end
local cpu_park = util.cpu() - cpu0
local rss1, hwm1 = util.rss(), util.hwm()

-- Wake in deadline order (sorting stands in for a timer heap).
local order = {}
for i = 1, N do order[i] = i end
table.sort(order, function(a, b) return delays[a] < delays[b] end)
for _, i in ipairs(order) do
  local deadline = t0 + delays[i]
  while util.now() < deadline do end
  resume(cos[i])
  cos[i] = false
end
local wall = util.now() - t0

util.result({ "wall_s", wall }, { "cpu_park_s", cpu_park },
  { "bytes_per_task", (rss1 - rss0) / N },
  { "hwm_bytes_per_task", (hwm1 - rss0) / N }, { "tasks", N })
