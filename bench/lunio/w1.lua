-- W1 spawn on lunio: N tasks that each return a number at once; wait for
-- all; sum. Two ways, as BENCHMARKS.md asks:
--   lua5.4 bench/lunio/w1.lua [N]          await each task in a loop
--   lua5.4 bench/lunio/w1.lua gather [N]   one lunio.gather(list)
-- (bench/run sets LUA_PATH/LUA_CPATH to the repo's lua/ and build/.)
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
package.path = dir .. "/../lib/?.lua;" .. package.path
local util = require "util"
local lunio = require "lunio"

local gather = arg[1] == "gather"
local N = util.arg_int(gather and 2 or 1, 200000)
local create_task = lunio.create_task
local function child(i) return i end

lunio.run(function()
  local t0 = util.now()
  local tasks = {}
  for i = 1, N do tasks[i] = create_task(child, i) end
  local sum = 0
  if gather then
    local results = lunio.gather(tasks)
    for i = 1, N do sum = sum + results[i] end
  else
    for i = 1, N do sum = sum + tasks[i]:await() end
  end
  local elapsed = util.now() - t0
  assert(sum == N * (N + 1) // 2, "bad sum")
  util.result({ "tasks_per_s", N / elapsed }, { "elapsed_s", elapsed },
    { "tasks", N }, { "sum", sum })
end)
