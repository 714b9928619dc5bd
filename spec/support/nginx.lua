--- nginx fixture for busted specs (plain Lua 5.4, no lunio needed).
--
--   local nginx = require "support.nginx"
--   local srv = nginx.start()          -- blocks until nginx answers
--   srv:url("/small.txt")              -- http://127.0.0.1:PORT/small.txt
--   srv:url("/small.txt", "tls")       -- https://127.0.0.1:PORT/small.txt
--   srv.http, srv.h2c, srv.tls, srv.cert, srv.dir, srv.access_log
--   srv:connections()                  -- distinct connections in the log
--   srv:stop()                         -- stops nginx, removes the temp dir
--
-- The work is done by scripts/nginx-fixture; see it for the endpoints.
local M = {}

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- The repository root, found from this file's path (spec/support/nginx.lua)
-- so specs work whatever the current directory is.
local function repo_root()
  local src = debug.getinfo(1, "S").source
  local path = src:sub(1, 1) == "@" and src:sub(2) or "spec/support/nginx.lua"
  local dir = path:match("^(.*)/spec/support/[^/]*$")
  if dir == nil or dir == "" then
    dir = path:match("^spec/support/") and "." or nil
  end
  if dir and dir:sub(1, 1) ~= "/" then
    local p = io.popen("cd " .. shell_quote(dir) .. " && pwd")
    dir = p:read("l")
    p:close()
  end
  return dir or "."
end

local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok, out, code
end

local Server = {}
Server.__index = Server

--- URL of `path` on one of the three servers.
---@param path string
---@param which? "http"|"h2c"|"tls"
function Server:url(path, which)
  which = which or "http"
  local port = self[which]
  if type(port) ~= "number" then
    error("bad argument #2 to 'url' (expected \"http\", \"h2c\" or \"tls\")", 2)
  end
  path = path or "/"
  if path:sub(1, 1) ~= "/" then path = "/" .. path end
  local scheme = which == "tls" and "https" or "http"
  return string.format("%s://127.0.0.1:%d%s", scheme, port, path)
end

--- Access log lines so far (each: connection, connection_requests, server
--- port, protocol, "request", status, bytes).
function Server:log_lines()
  local f = io.open(self.access_log, "r")
  if not f then return {} end
  local lines = {}
  for line in f:lines() do lines[#lines + 1] = line end
  f:close()
  return lines
end

--- Number of distinct connections in the access log so far; `which`
--- ("http", "h2c", "tls") restricts the count to one server.
---@param which? "http"|"h2c"|"tls"
function Server:connections(which)
  local port = which and self[which]
  local seen, n = {}, 0
  for _, line in ipairs(self:log_lines()) do
    local conn, p = line:match("^(%d+) %d+ (%d+) ")
    if conn and (not port or tonumber(p) == port) and not seen[conn] then
      seen[conn] = true
      n = n + 1
    end
  end
  return n
end

--- Number of requests in the access log so far (optionally for one server).
function Server:requests(which)
  local port = which and self[which]
  local n = 0
  for _, line in ipairs(self:log_lines()) do
    local p = line:match("^%d+ %d+ (%d+) ")
    if p and (not port or tonumber(p) == port) then n = n + 1 end
  end
  return n
end

--- Truncates the access log (so a spec can count only its own requests).
function Server:clear_log()
  local f = io.open(self.access_log, "w")
  if f then f:close() end
end

function Server:stop()
  if self.stopped then return end
  self.stopped = true
  run(shell_quote(self.script) .. " stop " .. shell_quote(self.dir))
  os.execute("rm -rf " .. shell_quote(self.dir))
end

Server.__close = Server.stop
Server.__gc = Server.stop

--- Starts a fresh nginx fixture in a new temporary directory.
function M.start()
  local root = repo_root()
  local script = root .. "/scripts/nginx-fixture"
  local p = assert(io.popen("mktemp -d /tmp/lunio-nginx.XXXXXX"))
  local dir = p:read("l")
  p:close()
  assert(dir and dir ~= "", "mktemp failed")
  local ok, out = run(shell_quote(script) .. " start " .. shell_quote(dir))
  if not ok then
    run(shell_quote(script) .. " stop " .. shell_quote(dir))
    os.execute("rm -rf " .. shell_quote(dir))
    error("nginx fixture failed to start:\n" .. out, 2)
  end
  local info = dofile(dir .. "/fixture.lua")
  info.script = script
  return setmetatable(info, Server)
end

return M
