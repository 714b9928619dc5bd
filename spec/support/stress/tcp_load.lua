-- Load: N concurrent TCP connections to one lunio echo server, each
-- sending M messages and reading each echo back, ROUNDS times in one
-- process (spec/stress_load_spec.lua and spec/stream_stress_spec.lua run
-- it with a raised `ulimit -n`):
--
--   lua5.4 spec/support/stress/tcp_load.lua [N] [M] [ROUNDS]
--
-- Prints figure lines as support/stress.lua formats them: "start ...",
-- then after each round "round ... round=I connections=N messages=N*M
-- seconds= peak_open= peak_fds= peak_rss=" (the peaks sampled every 0.1 s;
-- the rest after a full collection, with `rss_trim` after malloc_trim),
-- then "ok". Raises on any lost or wrong echo.
local S = require "support.stress"
local lunio = require "lunio"

local N = math.tointeger(tonumber(arg[1] or "")) or 5000
local M = math.tointeger(tonumber(arg[2] or "")) or 20
local ROUNDS = math.tointeger(tonumber(arg[3] or "")) or 1

local function echo(stream)
  while true do
    local data = stream:read()
    if not data then break end
    stream:write(data)
  end
end

local function client(port, id, stats)
  local s <close> = lunio.open_connection("127.0.0.1", port)
  stats.open = stats.open + 1
  stats.peak_open = math.max(stats.peak_open, stats.open)
  for i = 1, M do
    local msg = ("%06d:%04d|0123456789abcdef"):format(id, i)
    s:write(msg)
    local back = s:read_exactly(#msg)
    if back ~= msg then error(("connection %d: sent %q, got %q"):format(id, msg, back)) end
  end
  stats.open = stats.open - 1
end

lunio.run(function()
  local loop = lunio.get_running_loop()
  local server <close> = lunio.start_server(echo, "127.0.0.1", 0, { backlog = 4096 })
  S.line("start", S.settled_sample(loop))
  for round = 1, ROUNDS do
    local stats = { open = 0, peak_open = 0, peak_fds = 0, peak_rss = 0 }
    local sampler = lunio.spawn(function()
      while true do
        lunio.sleep(0.1)
        local s = S.sample()
        stats.peak_fds = math.max(stats.peak_fds, s.fds)
        stats.peak_rss = math.max(stats.peak_rss, s.rss)
      end
    end)
    local t0 = lunio.now()
    do -- (the list of tasks is garbage after the block)
      local tasks = {}
      for id = 1, N do tasks[id] = lunio.spawn(client, server.port, id, stats) end
      lunio.gather(tasks)
    end
    local seconds = lunio.now() - t0
    sampler:cancel()
    lunio.wait({ sampler }) -- (it ends without raising here)
    -- the server's handlers see the clients' EOF and finish
    while server:connections() > 0 do lunio.sleep(0.01) end
    S.line("round", S.settled_sample(loop, {
      round = round, connections = N, messages = N * M, seconds = seconds,
      peak_open = stats.peak_open, peak_fds = stats.peak_fds, peak_rss = stats.peak_rss,
    }))
  end
end)
S.line("ok")
