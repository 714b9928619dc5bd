-- W4 tcp-echo server on luv (callbacks: libuv's own style): read_start's
-- callback writes each chunk back. Prints "READY <port>", serves until
-- killed. usage: lua5.4 w4.lua [port]
local uv = require "luv"

local port = math.tointeger(tonumber(arg[1] or "0"))
local server = uv.new_tcp()
assert(server:bind("127.0.0.1", port))
assert(server:listen(511, function(err)
  if err then return end
  local c = uv.new_tcp()
  server:accept(c)
  c:nodelay(true)
  c:read_start(function(rerr, data)
    if rerr or not data then
      c:close()
      return
    end
    c:write(data)
  end)
end))
io.write("READY ", server:getsockname().port, "\n")
io.flush()
uv.run()
