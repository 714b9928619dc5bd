-- Load: N tasks spawned and finished in one lunio.run (started by
-- spec/stress_load_spec.lua; runs by hand too):
--
--   lua5.4 spec/support/stress/tasks.lua [N] [WINDOW] [ALL_AT_ONCE_ROUNDS]
--
-- Spawns N tasks (default 1,000,000) in waves of WINDOW (default 10,000)
-- tasks alive at once: odd tasks suspend once (sleep(0)), even ones return
-- at once; every result is summed and checked. Then, if ALL_AT_ONCE_ROUNDS
-- > 0, as many rounds of N tasks alive at the same time (the first round
-- is the warm-up the next ones are compared with: the loop keeps its grown
-- queues). Prints, each after two full collections:
--   start   tasks= handles= resources= fds= heap= rss= rss_trim= lua=
--   windowed n= window= seconds= rate= peak_rss=     then the same fields
--   all_at_once round= n= seconds= peak_rss=         then the same fields
--   ok
-- heap is malloc's in-use memory (KiB): a leak shows there exactly; rss is
-- taken after the collections, rss_trim after malloc_trim(0) too (glibc
-- keeps freed pages resident, so rss alone stays near the peak).
local S = require "support.stress"
local lunio = require "lunio"

local N = math.tointeger(tonumber(arg[1] or "")) or 1000000
local W = math.tointeger(tonumber(arg[2] or "")) or 10000
local ROUNDS = math.tointeger(tonumber(arg[3] or "")) or 0

local sleep = lunio.sleep

local function body(i)
  if i % 2 == 1 then sleep(0) end
  return i
end

-- Spawns tasks first .. first + n - 1, awaits them all; returns their sum.
local function wave(first, n)
  local list = {}
  for i = 1, n do list[i] = lunio.spawn(body, first + i - 1) end
  local results = lunio.gather(list)
  local sum = 0
  for i = 1, n do sum = sum + results[i] end
  return sum
end

local sample = S.settled_sample

lunio.run(function()
  local loop = lunio.get_running_loop()
  wave(1, W) -- warm-up: the loop's queues reach the window's size
  S.line("start", sample(loop))

  local t0, peak = lunio.now(), 0
  local sum, first = 0, 1
  while first <= N do
    local n = math.min(W, N - first + 1)
    sum = sum + wave(first, n)
    first = first + n
    if first % (W * 16) == 1 then peak = math.max(peak, S.rss_kb()) end
  end
  local seconds = lunio.now() - t0
  assert(sum == N * (N + 1) // 2, "lost or wrong results: sum " .. sum)
  S.line("windowed", sample(loop, { n = N, window = W, seconds = seconds,
    rate = math.floor(N / seconds), peak_rss = math.max(peak, S.rss_kb()) }))

  for round = 1, ROUNDS do
    t0 = lunio.now()
    sum = wave(1, N)
    seconds = lunio.now() - t0
    assert(sum == N * (N + 1) // 2, "lost or wrong results: sum " .. sum)
    S.line("all_at_once", sample(loop, { round = round, n = N,
      seconds = seconds, peak_rss = S.vmhwm_kb() }))
  end
end)
S.line("ok")
