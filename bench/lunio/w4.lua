-- W4 tcp-echo, lunio: a Stream echo server written with coroutines (the
-- handler reads and writes; no callbacks). Prints "READY <port>", then
-- serves until killed. usage: lua5.4 w4.lua [port]
local lunio = require "lunio"

local port = math.tointeger(tonumber(arg[1] or "0"))

local function echo(s)
  while true do
    local d = s:read()
    if not d then break end
    s:write(d)
  end
end

lunio.run(function()
  local server = lunio.start_server(echo, "127.0.0.1", port)
  io.write("READY ", server.port, "\n")
  io.flush()
  server:serve_forever()
end)
