-- W1 spawn on luv: N tasks (coroutines on the sched.lua ready queue) that
-- each return a number at once; await all; sum.  usage: lua5.4 w1.lua [N]
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
package.path = dir .. "/?.lua;" .. dir .. "/../../lib/?.lua;" .. package.path
local util = require "util"
local sched = require "sched"

local N = util.arg_int(1, 200000)
local function child(i) return i end

sched.run(function()
  local t0 = util.now()
  local tasks = {}
  for i = 1, N do tasks[i] = sched.spawn(child, i) end
  local sum = 0
  for i = 1, N do sum = sum + sched.await(tasks[i]) end
  local elapsed = util.now() - t0
  assert(sum == N * (N + 1) // 2, "bad sum")
  util.result({ "tasks_per_s", N / elapsed }, { "elapsed_s", elapsed },
    { "tasks", N }, { "sum", sum })
end)
