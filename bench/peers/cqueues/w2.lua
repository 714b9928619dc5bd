-- W2 switch on cqueues: T coroutines (cq:wrap) x K cqueues.sleep(0).
-- usage: lua5.4 w2.lua [T] [K]
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
package.path = dir .. "/../../lib/?.lua;" .. package.path
local util = require "util"
local cqueues = require "cqueues"

local T = util.arg_int(1, 1000)
local K = util.arg_int(2, 1000)
local sleep = cqueues.sleep

local cq = cqueues.new()
local t0 = cqueues.monotime()
for _ = 1, T do
  cq:wrap(function()
    for _ = 1, K do sleep(0) end
  end)
end
assert(cq:loop())
local elapsed = cqueues.monotime() - t0
util.result({ "switches_per_s", T * K / elapsed }, { "elapsed_s", elapsed },
  { "switches", T * K })
