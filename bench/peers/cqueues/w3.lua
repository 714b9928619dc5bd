-- W3 sleepers on cqueues: N coroutines each cqueues.sleep(uniform 0-1 s).
-- RSS per parked task is read right after spawning all and yielding once.
-- usage: lua5.4 w3.lua [N]
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
package.path = dir .. "/../../lib/?.lua;" .. package.path
local util = require "util"
local cqueues = require "cqueues"

local N = util.arg_int(1, 100000)
local delays = util.delays(N, 42)
local sleep = cqueues.sleep

local cq = cqueues.new()
local out
cq:wrap(function()
  collectgarbage()
  collectgarbage()
  local rss0 = util.rss()
  local t0, c0 = cqueues.monotime(), util.cpu()
  for i = 1, N do
    local d = delays[i]
    cq:wrap(function() sleep(d) end)
  end
  sleep(0) -- every sleeper has started and parked
  local rss1, hwm1 = util.rss(), util.hwm()
  out = { rss0 = rss0, t0 = t0, c0 = c0, rss1 = rss1, hwm1 = hwm1 }
end)
assert(cq:loop())
local wall, cpu = cqueues.monotime() - out.t0, util.cpu() - out.c0
util.result({ "wall_s", wall }, { "cpu_s", cpu },
  { "bytes_per_task", (out.rss1 - out.rss0) / N },
  { "hwm_bytes_per_task", (out.hwm1 - out.rss0) / N }, { "tasks", N })
