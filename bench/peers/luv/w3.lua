-- W3 sleepers on luv: N tasks each sleeping a uniform random 0-1 s (one
-- uv_timer per sleep). RSS per parked task is read right after spawning
-- all and yielding once.   usage: lua5.4 w3.lua [N]
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
package.path = dir .. "/?.lua;" .. dir .. "/../../lib/?.lua;" .. package.path
local util = require "util"
local sched = require "sched"

local N = util.arg_int(1, 100000)
local delays = util.delays(N, 42)
local sleep = sched.sleep

sched.run(function()
  collectgarbage()
  collectgarbage()
  local rss0 = util.rss()
  local t0, c0 = util.now(), util.cpu()
  local tasks = {}
  for i = 1, N do
    local d = delays[i]
    tasks[i] = sched.spawn(function() sleep(d) end)
  end
  sleep(0) -- every sleeper has started and parked
  local rss1, hwm1 = util.rss(), util.hwm()
  for i = 1, N do sched.await(tasks[i]) end
  local wall, cpu = util.now() - t0, util.cpu() - c0
  util.result({ "wall_s", wall }, { "cpu_s", cpu },
    { "bytes_per_task", (rss1 - rss0) / N },
    { "hwm_bytes_per_task", (hwm1 - rss0) / N }, { "tasks", N })
end)
