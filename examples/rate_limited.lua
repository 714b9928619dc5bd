-- A job runner: runs many jobs concurrently, at most LIMIT at a time
-- (a Semaphore), gives each job its own deadline (lunio.wait_for) and the
-- whole batch an overall one (a lunio.timeout scope). Jobs here just sleep
-- for a duration derived from their number; replace `job` with real work.
--
--   lua5.4 examples/rate_limited.lua [-n JOBS] [-c LIMIT] [-t JOB_TIMEOUT] [-T TOTAL_TIMEOUT]
--
-- Prints one line per job, in job order, then a summary.
local lunio = require "lunio"

local function parse_args(argv)
  local o = { jobs = 12, limit = 3, job_timeout = 0.1, total_timeout = 5 }
  local i = 1
  while argv[i] do
    local a, v = argv[i], tonumber(argv[i + 1])
    if a == "-n" then o.jobs = v
    elseif a == "-c" then o.limit = v
    elseif a == "-t" then o.job_timeout = v
    elseif a == "-T" then o.total_timeout = v
    else
      io.stderr:write("usage: rate_limited.lua [-n JOBS] [-c LIMIT] "
        .. "[-t JOB_TIMEOUT] [-T TOTAL_TIMEOUT]\n")
      os.exit(2)
    end
    i = i + 2
  end
  return o
end

-- The work: job i takes (i % 4) * 10 ms, except that every fourth one
-- (i % 4 == 3) takes 300 ms: too slow for the default 100 ms deadline.
local function job(i)
  lunio.sleep(i % 4 == 3 and 0.3 or (i % 4) * 0.01)
  return ("result-%d"):format(i)
end

local function run_all(o)
  local sem = lunio.Semaphore(o.limit)
  local running, peak = 0, 0
  local outcome = {}

  local function worker(i)
    -- Wait for a free slot; the guard gives it back however we leave.
    local _ <close> = sem:acquire()
    running = running + 1
    if running > peak then peak = running end
    -- lunio.pcall, not pcall: when the overall deadline cancels this
    -- worker, the cancellation must go through, not count as a job failure
    local ok, res = lunio.pcall(lunio.wait_for, function() return job(i) end, o.job_timeout)
    running = running - 1
    if ok then
      outcome[i] = "ok " .. res
    elseif lunio.is_error(res, "timeout") then
      outcome[i] = "timed out"
    else
      error(res, 0) -- a real failure
    end
  end

  local ok, err = lunio.pcall(function()
    local _ <close> = lunio.timeout(o.total_timeout)
    local tg <close> = lunio.TaskGroup()
    for i = 1, o.jobs do tg:spawn(worker, i) end
  end)
  if not ok and not lunio.is_error(err, "timeout") then error(err, 0) end
  return outcome, peak, not ok
end

local opts = parse_args(arg)
lunio.run(function()
  local outcome, peak, overall_timeout = run_all(opts)
  local n_ok, n_timeout, n_cancelled = 0, 0, 0
  for i = 1, opts.jobs do
    local o = outcome[i]
    if o == nil then
      o = "cancelled (overall deadline)"
      n_cancelled = n_cancelled + 1
    elseif o == "timed out" then
      n_timeout = n_timeout + 1
    else
      n_ok = n_ok + 1
    end
    print(("job %2d: %s"):format(i, o))
  end
  print(("%d ok, %d timed out, %d cancelled; at most %d at a time (limit %d)%s")
    :format(n_ok, n_timeout, n_cancelled, peak, opts.limit,
      overall_timeout and "; overall deadline reached" or ""))
end)
