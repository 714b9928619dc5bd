-- An echo server: whatever a client sends comes back.
--
--   lua5.4 examples/echo_server.lua [port]     (default 8007; 0 = any free port)
--
-- Try it with `nc 127.0.0.1 8007` or `lua5.4 examples/echo_client.lua 8007 hi`.
-- Each connection gets its own task (the handler below); the server closes
-- the connection when the handler returns. Ctrl-C stops the server.
local lunio = require "lunio"

local port = math.tointeger(tonumber(arg[1] or "8007"))
if not port then
  io.stderr:write("usage: echo_server.lua [port]\n")
  os.exit(2)
end

local function handle(stream)
  local host, peer_port = stream:peername()
  print(("%s:%d connected"):format(host, peer_port))
  while true do
    local data = stream:read()
    if not data then break end -- the client closed its end
    stream:write(data)
  end
  print(("%s:%d closed"):format(host, peer_port))
end

local ok, err = pcall(lunio.run, function()
  local server <close> = lunio.start_server(handle, "127.0.0.1", port)
  print(("echo server on 127.0.0.1 port %d"):format(server.port))
  io.stdout:flush()
  server:serve_forever()
end)
if not ok and not lunio.is_error(err, "interrupted") then error(err, 0) end
print("stopped")
