-- Sends each message to an echo server as a line and prints the answers.
--
--   lua5.4 examples/echo_client.lua PORT [message...]    (host 127.0.0.1)
--
-- Pairs with examples/echo_server.lua. Shows open_connection with a
-- timeout, write + read_line, and catching I/O errors with lunio.pcall
-- (which, unlike pcall, lets a cancellation through).
local lunio = require "lunio"

local port = math.tointeger(tonumber(arg[1] or ""))
if not port then
  io.stderr:write("usage: echo_client.lua PORT [message...]\n")
  os.exit(2)
end
local messages = { table.unpack(arg, 2) }
if #messages == 0 then messages = { "hello", "world" } end

lunio.run(function()
  local ok, stream = lunio.pcall(lunio.open_connection, "127.0.0.1", port, { timeout = 5 })
  if not ok then
    io.stderr:write("echo_client: ", tostring(stream), "\n") -- e.g. econnrefused
    os.exit(1)
  end
  local s <close> = stream
  for _, msg in ipairs(messages) do
    s:write(msg .. "\n")
    print(s:read_line())
  end
end)
