-- Load: N concurrent TCP connections to one lunio
-- echo server, each sending M messages and reading each echo back
-- (spec/stress_load_spec.lua runs it with a raised `ulimit -n`; the
-- streams branch's spec/stream_stress_spec.lua is the full version):
--
--   lua5.4 spec/support/stress/tcp_load.lua [N] [M]
--
-- Prints "start ..." and "done ... peak_open= seconds=" figure lines (as
-- support/stress.lua formats them), then "ok".
local S = require "support.stress"
local lunio = require "lunio"

local N = math.tointeger(tonumber(arg[1] or "")) or 5000
local M = math.tointeger(tonumber(arg[2] or "")) or 20

local function echo(stream)
  while true do
    local data = stream:read()
    if not data then break end
    stream:write(data)
  end
end

lunio.run(function()
  local loop = lunio.get_running_loop()
  local server <close> = lunio.start_server(echo, "127.0.0.1", 0, { backlog = 4096 })
  S.settle()
  S.line("start", S.sample(loop, true))
  local open, peak = 0, 0
  local t0 = lunio.now()
  local tasks = {}
  for id = 1, N do
    tasks[id] = lunio.spawn(function()
      local s <close> = lunio.open_connection("127.0.0.1", server.port)
      open = open + 1
      peak = math.max(peak, open)
      for i = 1, M do
        local msg = ("%06d:%04d|0123456789abcdef"):format(id, i)
        s:write(msg)
        local back = s:read_exactly(#msg)
        if back ~= msg then error(("connection %d: sent %q, got %q"):format(id, msg, back)) end
      end
      open = open - 1
    end)
  end
  lunio.gather(tasks)
  tasks = nil -- luacheck: ignore
  local seconds = lunio.now() - t0
  while server:connections() > 0 do lunio.sleep(0.01) end
  S.settle()
  local s = S.sample(loop, true)
  s.peak_open, s.seconds, s.messages = peak, seconds, N * M
  S.line("done", s)
end)
S.line("ok")
