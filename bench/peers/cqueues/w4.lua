-- W4 tcp-echo server on cqueues: one coroutine per connection reading
-- what arrived (up to 64 KiB) and writing it back, unbuffered. Prints
-- "READY <port>", serves until killed. usage: lua5.4 w4.lua [port]
local cqueues = require "cqueues"
local socket = require "cqueues.socket"

local port = math.tointeger(tonumber(arg[1] or "0"))
local cq = cqueues.new()
local server = socket.listen({ host = "127.0.0.1", port = port, reuseaddr = true })
assert(server:listen())
local _, _, bound = server:localname()

cq:wrap(function()
  for con in server:clients() do
    cq:wrap(function()
      con:setmode("bn", "bn") -- binary, no buffering of output
      con:onerror(function(_, _, code) return code end)
      while true do
        local data = con:read(-65536)
        if not data then break end
        con:write(data)
      end
      con:close()
    end)
  end
end)
io.write("READY ", bound, "\n")
io.flush()
assert(cq:loop())
