-- Checks which TCP ports accept connections, many at once.
--
--   lua5.4 examples/port_check.lua [-c N] [-t SECONDS] [host:port | host:from-to]...
--
-- Without targets it checks 127.0.0.1:1-1024. At most N connects are in
-- flight (a Semaphore, default 200), each bounded by a timeout (default
-- 1 s). Prints the open ports in order, then a summary line.
local lunio = require "lunio"

local function usage(msg)
  io.stderr:write("port_check: ", msg, "\n",
    "usage: port_check.lua [-c N] [-t SECONDS] [host:port | host:from-to]...\n")
  os.exit(2)
end

local limit, timeout, targets = 200, 1, {}
local i = 1
while i <= #arg do
  local a = arg[i]
  if a == "-c" or a == "-t" then
    i = i + 1
    local v = tonumber(arg[i] or "")
    if not v or v <= 0 then usage("bad value for " .. a) end
    if a == "-c" then limit = math.tointeger(v) or usage("-c takes an integer") else timeout = v end
  else
    local host, from, to = a:match("^(.+):(%d+)%-(%d+)$")
    if not host then
      host, from = a:match("^(.+):(%d+)$")
      to = from
    end
    from, to = tonumber(from), tonumber(to)
    if not host or from < 1 or to > 65535 or from > to then usage("bad target " .. a) end
    for port = from, to do targets[#targets + 1] = { host = host, port = port } end
  end
  i = i + 1
end
if #targets == 0 then
  for port = 1, 1024 do targets[#targets + 1] = { host = "127.0.0.1", port = port } end
end

lunio.run(function()
  local sem = lunio.Semaphore(limit)
  local counts = { open = 0, closed = 0, timeout = 0, error = 0 }
  local tasks = {}
  for n, target in ipairs(targets) do
    tasks[n] = lunio.spawn(function()
      local _ <close> = sem:acquire()
      local ok, s = lunio.pcall(lunio.open_connection, target.host, target.port,
        { timeout = timeout })
      if ok then
        s:close()
        target.state = "open"
      elseif lunio.is_error(s, "econnrefused") then
        target.state = "closed"
      elseif lunio.is_error(s, "timeout") then
        target.state = "timeout"
      else
        target.state = "error"
        target.err = s
      end
      counts[target.state] = counts[target.state] + 1
    end)
  end
  lunio.gather(tasks)
  for _, t in ipairs(targets) do
    if t.state == "open" then
      print(("%s:%d open"):format(t.host, t.port))
    elseif t.state == "error" then
      print(("%s:%d %s"):format(t.host, t.port, tostring(t.err)))
    end
  end
  print(("checked %d: %d open, %d closed, %d timed out, %d errors"):format(#targets,
    counts.open, counts.closed, counts.timeout, counts.error))
end)
