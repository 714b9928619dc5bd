-- W1 limit: the bare mechanism, one plain coroutine per task.
--   lua5.4 bench/limit/w1.lua seq   [N]  create+resume one at a time
--   lua5.4 bench/limit/w1.lua alive [N]  create all N, then resume each
--                                         (all N coroutines exist at once)
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
package.path = dir .. "/../lib/?.lua;" .. package.path
local util = require "util"

local mode = arg[1] or "seq"
local N = util.arg_int(2, 200000)

local create, resume = coroutine.create, coroutine.resume
local function child(i) return i end

local sum = 0
local t0 = util.now()
if mode == "seq" then
  for i = 1, N do
    local co = create(child)
    local _, v = resume(co, i)
    sum = sum + v
  end
elseif mode == "alive" then
  local cos = {}
  for i = 1, N do cos[i] = create(child) end
  for i = 1, N do
    local _, v = resume(cos[i], i)
    sum = sum + v
  end
else
  error("mode must be seq or alive")
end
local elapsed = util.now() - t0
assert(sum == N * (N + 1) // 2, "bad sum")
util.result({ "tasks_per_s", N / elapsed }, { "elapsed_s", elapsed },
  { "tasks", N }, { "sum", sum })
