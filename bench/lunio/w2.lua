-- W2 switch on lunio: T tasks x K lunio.sleep(0) = T*K switches.
-- usage: lua5.4 bench/lunio/w2.lua [T] [K]
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
package.path = dir .. "/../lib/?.lua;" .. package.path
local util = require "util"
local lunio = require "lunio"

local T = util.arg_int(1, 1000)
local K = util.arg_int(2, 1000)
local sleep = lunio.sleep

local function child()
  for _ = 1, K do sleep(0) end
end

lunio.run(function()
  local t0 = util.now()
  local tasks = {}
  for i = 1, T do tasks[i] = lunio.create_task(child) end
  for i = 1, T do tasks[i]:await() end
  local elapsed = util.now() - t0
  util.result({ "switches_per_s", T * K / elapsed }, { "elapsed_s", elapsed },
    { "switches", T * K })
end)
