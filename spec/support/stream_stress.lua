-- The stream stress run (spec/stream_stress_spec.lua starts it in a child
-- process with a raised descriptor limit):
--
--   lua5.4 spec/support/stream_stress.lua [connections] [messages] [rounds]
--
-- One lunio echo server, `connections` clients connected at the same time
-- in the same process, each sending `messages` messages and waiting for
-- each echo; `rounds` times. Prints one line per measurement:
--   start fds=N rss_kb=N heap_kb=N rss_trim_kb=N lua_kb=N
--   round I connections=N messages=N seconds=S peak_open=N peak_fds=N
--     peak_rss_kb=N fds=N rss_kb=N heap_kb=N rss_trim_kb=N lua_kb=N
--                                                   (on one line)
-- and "ok" at the end; raises on any lost or wrong echo. The figures after
-- a round are taken after a full collection: heap_kb is what malloc counts
-- in use, rss_kb the resident set, rss_trim_kb the resident set after
-- malloc_trim(0) (rss_kb alone depends on which freed pages glibc happens
-- to keep), lua_kb the Lua heap.
local lunio = require "lunio"
local core = require "lunio.core"
local S = require "support.stress"
local rss_kb = S.rss_kb

local nconn = math.tointeger(tonumber(arg[1] or "5000"))
local nmsg = math.tointeger(tonumber(arg[2] or "100"))
local rounds = math.tointeger(tonumber(arg[3] or "2"))

local function echo(stream)
  while true do
    local d = stream:read()
    if not d then break end
    stream:write(d)
  end
end

local function client(port, id, stats)
  local s <close> = lunio.open_connection("127.0.0.1", port)
  stats.open = stats.open + 1
  if stats.open > stats.peak_open then stats.peak_open = stats.open end
  for i = 1, nmsg do
    local msg = ("%06d:%04d|0123456789abcdef"):format(id, i)
    s:write(msg)
    local back = s:read_exactly(#msg)
    if back ~= msg then error(("connection %d: sent %q, got %q"):format(id, msg, back)) end
  end
  stats.open = stats.open - 1
end

lunio.run(function()
  local server <close> = lunio.start_server(echo, "127.0.0.1", 0, { backlog = 4096 })
  lunio.sleep(0.05)
  local s0 = S.settled_sample()
  print(("start fds=%d rss_kb=%d heap_kb=%d rss_trim_kb=%d lua_kb=%d"):format(s0.fds, s0.rss,
    s0.heap, s0.rss_trim, s0.lua))
  io.stdout:flush()
  for round = 1, rounds do
    local stats = { open = 0, peak_open = 0 }
    local peak_fds, peak_rss = 0, 0
    local t0 = lunio.now()
    local sampler = lunio.spawn(function()
      while true do
        lunio.sleep(0.1)
        local fds, rss = core.open_fds(), rss_kb()
        if fds > peak_fds then peak_fds = fds end
        if rss > peak_rss then peak_rss = rss end
      end
    end)
    do -- (the list of tasks is garbage after the block)
      local tasks = {}
      for id = 1, nconn do tasks[id] = lunio.spawn(client, server.port, id, stats) end
      lunio.gather(tasks)
    end
    local seconds = lunio.now() - t0
    sampler:cancel()
    -- the server's handlers see the clients' EOF and finish
    while server:connections() > 0 do lunio.sleep(0.01) end
    local after = S.settled_sample()
    print(("round %d connections=%d messages=%d seconds=%.2f peak_open=%d peak_fds=%d "
      .. "peak_rss_kb=%d fds=%d rss_kb=%d heap_kb=%d rss_trim_kb=%d lua_kb=%d"):format(round,
      nconn, nconn * nmsg, seconds, stats.peak_open, peak_fds, peak_rss, after.fds,
      after.rss, after.heap, after.rss_trim, after.lua))
    io.stdout:flush()
  end
end)
print("ok")
