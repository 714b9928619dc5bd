--- Wrapper for spec/support/bad_server.py (plain Lua 5.4, no lunio needed).
--
--   local bad = require("support.bad_server").start()
--   -- http://127.0.0.1:<bad.port>/ announces Content-Length: 100000,
--   -- sends 1000 bytes and closes the connection
--   bad:stop()
--
-- `start(mode)` picks another misbehaviour ("reset", "close_headers",
-- "garbage", "endless", "slowloris", "huge_length", "raw"): see the
-- docstring of bad_server.py.
local M = {}

M.announced = 100000
M.sent = 1000

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function here()
  local src = debug.getinfo(1, "S").source
  local path = src:sub(1, 1) == "@" and src:sub(2) or "spec/support/bad_server.lua"
  return path:match("^(.*)/[^/]*$") or "."
end

local Server = {}
Server.__index = Server

function Server:url(path)
  return string.format("http://127.0.0.1:%d%s", self.port, path or "/")
end

-- Whether the process runs: it exists and has not exited. An exited
-- process stays a zombie until PID 1 reaps it, which some container inits
-- do only seconds later (so `kill -0` alone would wait for that).
local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if f then
    local stat = f:read("a") or ""
    f:close()
    local state = stat:match("^.*%) (%a)")
    return state ~= nil and state ~= "Z" and state ~= "X"
  end
  return os.execute(string.format("kill -0 %d 2>/dev/null", pid)) == true
end
M.alive = alive

function Server:stop()
  if self.stopped then return end
  self.stopped = true
  os.execute(string.format("kill %d 2>/dev/null", self.pid))
  for _ = 1, 100 do
    if not alive(self.pid) then break end
    os.execute("sleep 0.02")
  end
  os.execute(string.format("kill -9 %d 2>/dev/null", self.pid))
  os.remove(self.port_file)
end

Server.__close = Server.stop
Server.__gc = Server.stop

--- Starts the server (in `mode`, default "short"); returns an object with
--- `.port`, `.pid`, `.mode`, `:url()`, `:stop()`.
---@param mode? string
function M.start(mode)
  local script = here() .. "/bad_server.py"
  local port_file = os.tmpname()
  local cmd = string.format(
    "/usr/bin/python3 %s %s >%s 2>&1 </dev/null & echo $!",
    shell_quote(script), shell_quote(mode or "short"), shell_quote(port_file))
  local p = assert(io.popen(cmd))
  local pid = tonumber(p:read("l"))
  p:close()
  assert(pid, "could not start bad_server.py")
  local port
  for _ = 1, 250 do
    local f = io.open(port_file, "r")
    if f then
      port = tonumber(f:read("l") or "")
      f:close()
    end
    if port then break end
    os.execute("sleep 0.02")
  end
  local srv = setmetatable({ pid = pid, port = port, port_file = port_file,
    mode = mode or "short" }, Server)
  if not port then
    srv:stop()
    error("bad_server.py did not report its port", 2)
  end
  return srv
end

return M
