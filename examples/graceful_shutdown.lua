-- A TCP server that finishes its in-flight requests on SIGTERM, then
-- exits 0.
--
--   lua5.4 examples/graceful_shutdown.lua [--port N] [--work S]
--                                         [--clients N] [--interval S]
--   nc 127.0.0.1 8009     # each line is a request, answered --work s later
--   kill -TERM <pid>      # stop accepting, finish what is in flight
--   kill -TERM <pid>      # again, while draining: give up on it (exit 1)
--
-- --port 0 picks a free port (printed in the "ready" line). --clients N
-- also runs N clients in this process, each sending a request every
-- --interval seconds, so that there is work in flight to finish.
--
-- On the first SIGTERM the server stops accepting (new connections are
-- refused), closes the connections that wait for a request, and lets each
-- connection that works on one answer it and close. Requests that arrive
-- meanwhile are not started. A second SIGTERM while draining aborts
-- every connection.
--
-- SIGTERM is watched with signal.on rather than signal.wait: a handler
-- stays registered, so a second SIGTERM arriving while the first is being
-- handled is seen too instead of killing the process (a signal nobody
-- watches has its default action). SIGINT keeps lunio.run's meaning: it
-- cancels the main task at once.
local lunio = require "lunio"
local signal = lunio.signal

local function parse_args(argv)
  local o = { port = 8009, work = 0.5, clients = 0, interval = 0.1 }
  local i = 1
  while argv[i] do
    local a, v = argv[i], tonumber(argv[i + 1])
    if a == "--port" and v then o.port = math.tointeger(v)
    elseif a == "--work" and v then o.work = v
    elseif a == "--clients" and v then o.clients = math.tointeger(v)
    elseif a == "--interval" and v then o.interval = v
    else
      io.stderr:write("usage: graceful_shutdown.lua [--port N] [--work S] "
        .. "[--clients N] [--interval S]\n")
      os.exit(2)
    end
    i = i + 2
  end
  return o
end

local function pid()
  local f = assert(io.open("/proc/self/stat"))
  local p = f:read("a"):match("^(%d+)")
  f:close()
  return p
end

local function main(o)
  local stats = { accepted = 0, done = 0, in_flight = 0 }
  local stopping = false
  local waiting = {} -- connections waiting for a request: stream -> task

  -- One connection: requests one line at a time, each answered after the
  -- "work". Between requests the connection counts as idle (closed when
  -- the server stops); a request read once stopping began is not started.
  local function handle(stream)
    while not stopping do
      waiting[stream] = lunio.current_task()
      local ok, line = lunio.pcall(stream.read_line, stream)
      waiting[stream] = nil
      if not ok or line == nil or stopping then return end
      stats.accepted = stats.accepted + 1
      stats.in_flight = stats.in_flight + 1
      local id = stats.accepted
      print(("request %d started: %s"):format(id, line))
      lunio.sleep(o.work) -- the work
      lunio.pcall(stream.write, stream, ("done %d: %s\n"):format(id, line))
      stats.in_flight = stats.in_flight - 1
      stats.done = stats.done + 1
      print(("request %d done"):format(id))
    end
  end

  -- Every SIGTERM is counted and wakes the main task.
  local terms, term = 0, lunio.Event()
  local _ <close> = signal.on("SIGTERM", function()
    terms = terms + 1
    term:set()
  end)

  local server = lunio.start_server(handle, "127.0.0.1", o.port)
  print(("ready pid=%s port=%d"):format(pid(), server.port))

  -- The built-in clients: a request every `interval` until the server
  -- closes their connection and refuses a new one.
  local clients = {}
  for c = 1, o.clients do
    clients[c] = lunio.create_task(function()
      local n = 0
      while true do
        local ok, stream = lunio.pcall(lunio.open_connection, "127.0.0.1", server.port)
        if not ok then return end -- refused: the server is shutting down
        local s <close> = stream
        while true do
          n = n + 1
          local sent, answer = lunio.pcall(function()
            s:write(("client %d job %d\n"):format(c, n))
            return s:read_line()
          end)
          if not (sent and answer) then break end -- closed by the server
          lunio.sleep(o.interval)
        end
      end
    end)
  end

  term:wait()
  term:clear()

  -- Stop accepting; close the idle connections; the busy ones finish.
  stopping = true
  server:close()
  for _, task in pairs(waiting) do task:cancel("the server is shutting down") end
  print(("SIGTERM: stopped accepting; finishing %d in flight"):format(stats.in_flight))
  local drained = lunio.create_task(server.wait_closed, server)
  local forced = lunio.create_task(term.wait, term)
  lunio.wait({ drained, forced }, { return_when = "first_completed" })

  if not drained:done() then
    local abandoned = stats.in_flight
    server:close({ abort = true })
    drained:cancel()
    for _, c in ipairs(clients) do c:cancel() end
    print(("SIGTERM again: abandoning %d request(s)"):format(abandoned))
    return false
  end
  forced:cancel()
  for _, c in ipairs(clients) do c:await() end -- refused by now: they end
  print(("shut down cleanly: %d accepted, %d done (%d SIGTERM)"):format(
    stats.accepted, stats.done, terms))
  return true
end

io.stdout:setvbuf("line")
if not lunio.run(main, parse_args(arg)) then os.exit(1) end
