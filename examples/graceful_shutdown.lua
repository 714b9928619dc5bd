-- A server that finishes its in-flight work on SIGTERM, then exits 0.
--
--   lua5.4 examples/graceful_shutdown.lua [--workers N] [--job-time S] [--interval S]
--   kill -TERM <pid>      # stop accepting, finish what was accepted
--   kill -TERM <pid>      # again, while draining: give up on the rest (exit 1)
--
-- The "server" is a pool of worker tasks taking jobs from a Queue, fed by
-- a producer that stands for incoming requests. It will become a TCP
-- server once lunio.start_server exists (streams are being built): the
-- producer becomes the accept loop and a job a connection's handler; the
-- shutdown logic stays as it is.
--
-- SIGTERM is watched with signal.on rather than signal.wait: a handler
-- stays registered, so a second SIGTERM arriving while the first is being
-- handled is seen too instead of killing the process (a signal nobody
-- watches has its default action). SIGINT keeps lunio.run's meaning: it
-- cancels the main task at once.
local lunio = require "lunio"
local signal = lunio.signal

local function parse_args(argv)
  local o = { workers = 3, job_time = 0.5, interval = 0.1, backlog = 10 }
  local i = 1
  while argv[i] do
    local a, v = argv[i], tonumber(argv[i + 1])
    if a == "--workers" and v then o.workers = v
    elseif a == "--job-time" and v then o.job_time = v
    elseif a == "--interval" and v then o.interval = v
    else
      io.stderr:write("usage: graceful_shutdown.lua [--workers N] [--job-time S] "
        .. "[--interval S]\n")
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
  local jobs = lunio.Queue(o.backlog)
  local stats = { accepted = 0, done = 0, in_flight = 0 }

  -- Every SIGTERM is counted and wakes the main task.
  local terms, term = 0, lunio.Event()
  local _ <close> = signal.on("SIGTERM", function()
    terms = terms + 1
    term:set()
  end)

  -- The stand-in for accepting requests: a job every `interval` seconds.
  local producer = lunio.create_task(function()
    local id = 0
    while true do
      id = id + 1
      jobs:put(id) -- waits while the backlog is full
      stats.accepted = stats.accepted + 1
      lunio.sleep(o.interval)
    end
  end)

  local workers = {}
  for w = 1, o.workers do
    workers[w] = lunio.create_task(function()
      while true do
        -- get() raises "closed" once the queue is shut down and empty
        local ok, job = lunio.pcall(jobs.get, jobs)
        if not ok then
          if lunio.is_error(job, "closed") then return end
          error(job, 0)
        end
        stats.in_flight = stats.in_flight + 1
        print(("job %d started (worker %d)"):format(job, w))
        lunio.sleep(o.job_time) -- the work
        stats.in_flight = stats.in_flight - 1
        stats.done = stats.done + 1
        print(("job %d done (worker %d)"):format(job, w))
      end
    end)
  end

  print(("ready pid=%s workers=%d"):format(pid(), o.workers))
  term:wait()
  term:clear()

  -- Stop accepting; the workers drain what was accepted.
  producer:cancel()
  jobs:shutdown()
  print(("SIGTERM: stopped accepting; finishing %d in flight, %d queued"):format(
    stats.in_flight, jobs:qsize()))
  local drained = lunio.create_task(function()
    for _, w in ipairs(workers) do w:await() end
  end)
  local forced = lunio.create_task(function() term:wait() end)
  lunio.wait({ drained, forced }, { return_when = "first_completed" })

  if not drained:done() then
    local abandoned = stats.in_flight + jobs:qsize()
    for _, w in ipairs(workers) do w:cancel() end
    drained:cancel()
    print(("SIGTERM again: abandoning %d job(s)"):format(abandoned))
    return false
  end
  forced:cancel()
  print(("shut down cleanly: %d accepted, %d done (%d SIGTERM)"):format(
    stats.accepted, stats.done, terms))
  return true
end

io.stdout:setvbuf("line")
if not lunio.run(main, parse_args(arg)) then os.exit(1) end
