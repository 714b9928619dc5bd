-- W1 spawn on cqueues: N coroutines started with cq:wrap that each store a
-- number at once; the main coroutine waits on a condition until all are
-- done, then sums. cqueues has no task objects with results; with
-- --promise each task is a cqueues.promise awaited with :get() instead
-- (about 2x slower).   usage: lua5.4 w1.lua [--promise] [N]
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
package.path = dir .. "/../../lib/?.lua;" .. package.path
local util = require "util"
local cqueues = require "cqueues"
local condition = require "cqueues.condition"
local promise = require "cqueues.promise"

local use_promise = arg[1] == "--promise"
local N = util.arg_int(use_promise and 2 or 1, 200000)
local function child(i) return i end

local cq = cqueues.new()
cq:wrap(function()
  local t0 = cqueues.monotime()
  local sum = 0
  if use_promise then
    local ps = {}
    for i = 1, N do ps[i] = promise.new(child, i) end
    for i = 1, N do sum = sum + ps[i]:get() end
  else
    local results, done, cond = {}, 0, condition.new()
    for i = 1, N do
      cq:wrap(function()
        results[i] = child(i)
        done = done + 1
        if done == N then cond:signal() end
      end)
    end
    while done < N do cond:wait() end
    for i = 1, N do sum = sum + results[i] end
  end
  local elapsed = cqueues.monotime() - t0
  assert(sum == N * (N + 1) // 2, "bad sum")
  util.result({ "tasks_per_s", N / elapsed }, { "elapsed_s", elapsed },
    { "tasks", N }, { "sum", sum })
end)
assert(cq:loop())
