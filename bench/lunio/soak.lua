-- Soak: W1 + W2 repeated ROUNDS times in one process (one lunio.run per
-- round), RSS read after round 2 and after the last round (each after a
-- full collection). Passes when the final RSS is within 10 % of round 2's.
-- usage: lua5.4 bench/lunio/soak.lua [ROUNDS] [W1_N] [W2_T] [W2_K]
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
package.path = dir .. "/../lib/?.lua;" .. package.path
local util = require "util"
local lunio = require "lunio"

local ROUNDS = util.arg_int(1, 20)
local N = util.arg_int(2, 200000)
local T = util.arg_int(3, 1000)
local K = util.arg_int(4, 1000)
local sleep = lunio.sleep

local function child(i) return i end
local function switcher()
  for _ = 1, K do sleep(0) end
end

local function round()
  local tasks = {}
  for i = 1, N do tasks[i] = lunio.create_task(child, i) end
  local sum = 0
  for i = 1, N do sum = sum + tasks[i]:await() end
  assert(sum == N * (N + 1) // 2, "bad sum")
  tasks = {}
  for i = 1, T do tasks[i] = lunio.create_task(switcher) end
  for i = 1, T do tasks[i]:await() end
end

local rss2, rss_last
local t0 = util.now()
for r = 1, ROUNDS do
  lunio.run(round)
  collectgarbage()
  collectgarbage()
  if r == 2 then rss2 = util.rss() end
  if r == ROUNDS then rss_last = util.rss() end
end
local elapsed = util.now() - t0
local ratio = rss_last / rss2
util.result({ "rss_round2_kb", rss2 // 1024 },
  { "rss_last_kb", rss_last // 1024 }, { "ratio", ratio },
  { "pass", math.abs(ratio - 1) <= 0.10 and "yes" or "no" },
  { "elapsed_s", elapsed }, { "rounds", ROUNDS })
