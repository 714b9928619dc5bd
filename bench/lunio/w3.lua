-- W3 sleepers on lunio: N tasks each lunio.sleep(uniform 0-1 s, fixed
-- seed). Reports wall s, CPU s (user+sys) and RSS per parked task, read
-- right after spawning all and yielding once. Two ways:
--   lua5.4 bench/lunio/w3.lua [N]          await each task in a loop
--   lua5.4 bench/lunio/w3.lua gather [N]   one lunio.gather(list)
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
package.path = dir .. "/../lib/?.lua;" .. package.path
local util = require "util"
local lunio = require "lunio"

local gather = arg[1] == "gather"
local N = util.arg_int(gather and 2 or 1, 100000)
local delays = util.delays(N, 42)
local sleep = lunio.sleep
local function sleeper(d) sleep(d) end

lunio.run(function()
  collectgarbage()
  collectgarbage()
  local rss0 = util.rss()
  local t0, c0 = util.now(), util.cpu()
  local tasks = {}
  for i = 1, N do tasks[i] = lunio.create_task(sleeper, delays[i]) end
  local rss1, hwm1
  if gather then
    -- the gather parks first; a helper reads the memory once every
    -- sleeper and the gather itself are parked
    lunio.create_task(function()
      sleep(0)
      rss1, hwm1 = util.rss(), util.hwm()
    end)
    lunio.gather(tasks)
  else
    sleep(0) -- every sleeper has started and parked
    rss1, hwm1 = util.rss(), util.hwm()
    for i = 1, N do tasks[i]:await() end
  end
  local wall, cpu = util.now() - t0, util.cpu() - c0
  util.result({ "wall_s", wall }, { "cpu_s", cpu },
    { "bytes_per_task", (rss1 - rss0) / N },
    { "hwm_bytes_per_task", (hwm1 - rss0) / N }, { "tasks", N })
end)
