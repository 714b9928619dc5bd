-- W2 limit: T plain coroutines, each yielding K times, resumed round robin
-- from Lua (T*K resume/yield pairs = switches).
--   lua5.4 bench/limit/w2.lua [T] [K]
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
package.path = dir .. "/../lib/?.lua;" .. package.path
local util = require "util"

local T = util.arg_int(1, 1000)
local K = util.arg_int(2, 1000)
local yield, resume, create = coroutine.yield, coroutine.resume,
  coroutine.create

local function body()
  for _ = 1, K do yield() end
end

local t0 = util.now()
local cos = {}
for i = 1, T do
  cos[i] = create(body)
  resume(cos[i]) -- run to the first yield, like a started task
end
local live = T
while live > 0 do
  live = 0
  for i = 1, T do
    local co = cos[i]
    if co then
      resume(co)
      if coroutine.status(co) == "dead" then cos[i] = false
      else live = live + 1 end
    end
  end
end
local elapsed = util.now() - t0
local switches = T * K
util.result({ "switches_per_s", switches / elapsed }, { "elapsed_s", elapsed },
  { "switches", switches })
