-- Runs shell commands concurrently and streams their output line by line,
-- each line tagged with the command's number (like `parallel --tag`).
--
--   lua5.4 examples/run_many.lua [-j N] [-t SECONDS] [--] COMMAND...
--   lua5.4 examples/run_many.lua -t 2 'ping -c 3 ::1' 'sleep 5' 'ls /nope'
--
-- Lines a command writes to stdout go to stdout as "[N] line", its stderr
-- lines to stderr the same way, as they come. -j runs at most N commands
-- at a time (default 4); -t stops a command that runs longer (SIGTERM,
-- then SIGKILL a second later). At the end, one line per command says
-- how it ended; the exit status is 0 when every command exited with 0.
local lunio = require "lunio"
local subprocess = lunio.subprocess

local function usage()
  io.stderr:write("usage: run_many.lua [-j N] [-t SECONDS] [--] COMMAND...\n")
  os.exit(2)
end

local function parse_args(argv)
  local o = { jobs = 4, commands = {} }
  local i = 1
  while argv[i] do
    local a = argv[i]
    if a == "-j" then
      o.jobs = math.tointeger(tonumber(argv[i + 1]))
      if not o.jobs or o.jobs < 1 then usage() end
      i = i + 2
    elseif a == "-t" then
      o.timeout = tonumber(argv[i + 1])
      if not o.timeout or o.timeout < 0 then usage() end
      i = i + 2
    elseif a == "--" then
      table.move(argv, i + 1, #argv, #o.commands + 1, o.commands)
      break
    elseif a:sub(1, 1) == "-" then
      usage()
    else
      o.commands[#o.commands + 1] = a
      i = i + 1
    end
  end
  if #o.commands == 0 then usage() end
  return o
end

-- Copies the lines of `stream` to `out`, each behind `tag`.
local function pump(stream, out, tag)
  for line in stream:lines() do
    out:write(tag, line, "\n")
  end
end

-- Runs one command; returns how it ended, as a phrase.
local function run_one(cmd, tag, timeout)
  local t0 = lunio.now()
  local p <close> = subprocess.exec({ "sh", "-c", cmd },
    { stdin = "null", stdout = "pipe", stderr = "pipe", kill_grace = 1 })
  local code, sig
  local ok, err = lunio.pcall(function()
    local _ <close> = lunio.timeout(timeout) -- nil: no limit
    -- The block waits for both pumps as it ends: every line is out before
    -- the command counts as done, even lines that come after its exit.
    local tg <close> = lunio.TaskGroup()
    tg:spawn(pump, p.stdout, io.stdout, tag)
    tg:spawn(pump, p.stderr, io.stderr, tag)
    -- At the deadline, wait() stops the command and reaps it.
    code, sig = p:wait()
  end)
  local took = ("%.2f s"):format(lunio.now() - t0)
  if not ok then
    if lunio.is_error(err, "timeout") then
      return ("timed out after %s"):format(took), false
    end
    error(err, 0)
  end
  if sig then return ("killed by %s after %s"):format(sig, took), false end
  return ("exit %d after %s"):format(code, took), code == 0
end

local function main(o)
  local slots = lunio.Semaphore(o.jobs)
  local results = {}
  local tasks = {}
  for i, cmd in ipairs(o.commands) do
    tasks[i] = lunio.create_task(function()
      local _ <close> = slots:acquire()
      results[i] = { run_one(cmd, ("[%d] "):format(i), o.timeout) }
    end)
  end
  lunio.gather(tasks)
  local all_ok = true
  for i, cmd in ipairs(o.commands) do
    local how, ok = results[i][1], results[i][2]
    all_ok = all_ok and ok
    print(("[%d] %s: %s"):format(i, how, cmd))
  end
  return all_ok
end

io.stdout:setvbuf("line")
if not lunio.run(main, parse_args(arg)) then os.exit(1) end
