-- W2 switch on luv: T tasks x K sleep(0) through the sched.lua ready queue.
-- usage: lua5.4 w2.lua [T] [K]
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
package.path = dir .. "/?.lua;" .. dir .. "/../../lib/?.lua;" .. package.path
local util = require "util"
local sched = require "sched"

local T = util.arg_int(1, 1000)
local K = util.arg_int(2, 1000)
local sleep = sched.sleep

sched.run(function()
  local t0 = util.now()
  local tasks = {}
  for i = 1, T do
    tasks[i] = sched.spawn(function()
      for _ = 1, K do sleep(0) end
    end)
  end
  for i = 1, T do sched.await(tasks[i]) end
  local elapsed = util.now() - t0
  util.result({ "switches_per_s", T * K / elapsed }, { "elapsed_s", elapsed },
    { "switches", T * K })
end)
