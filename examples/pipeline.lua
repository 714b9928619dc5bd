-- A three-stage pipeline: a producer feeds numbers into a bounded Queue,
-- a pool of workers squares them into a second queue, a collector sums the
-- results. One TaskGroup owns every task; the bounded queues make a fast
-- producer wait for slow workers (back-pressure).
--
--   lua5.4 examples/pipeline.lua [-n ITEMS] [-w WORKERS] [-q MAXSIZE] [--fail-at N]
--
-- With --fail-at N the worker that gets item N raises: the TaskGroup
-- cancels the other stages and the script reports the "task_group" error.
local lunio = require "lunio"

local function parse_args(argv)
  local o = { items = 20, workers = 3, maxsize = 4 }
  local i = 1
  while argv[i] do
    local a, v = argv[i], argv[i + 1]
    if a == "-n" then o.items = tonumber(v)
    elseif a == "-w" then o.workers = tonumber(v)
    elseif a == "-q" then o.maxsize = tonumber(v)
    elseif a == "--fail-at" then o.fail_at = tonumber(v)
    else
      io.stderr:write("usage: pipeline.lua [-n ITEMS] [-w WORKERS] [-q MAXSIZE] [--fail-at N]\n")
      os.exit(2)
    end
    i = i + 2
  end
  return o
end

local function pipeline(o)
  local numbers = lunio.Queue(o.maxsize)
  local squares = lunio.Queue(o.maxsize)
  local peak, sum, count = 0, 0, 0

  local tg <close> = lunio.TaskGroup()

  -- Stage 1: put() waits while `numbers` is full.
  tg:spawn(function()
    for i = 1, o.items do
      numbers:put(i)
      if numbers:qsize() > peak then peak = numbers:qsize() end
    end
    numbers:join()      -- every number went through a worker ...
    numbers:shutdown()  -- ... so the workers' loops end
  end)

  -- Stage 2: workers, until the input queue is shut down and drained.
  local workers = {}
  for w = 1, o.workers do
    workers[w] = tg:spawn(function()
      for n in numbers:iter() do
        if n == o.fail_at then
          error(lunio.error("bad_item", "worker " .. w .. " cannot square " .. n), 0)
        end
        lunio.sleep(0.001 * (n % 3)) -- some work
        squares:put(n * n)
        numbers:task_done()
      end
    end)
  end

  -- Stage 3: when every worker is done, close the output queue too.
  tg:spawn(function()
    lunio.gather(workers)
    squares:shutdown()
  end)
  tg:spawn(function()
    for v in squares:iter() do sum, count = sum + v, count + 1 end
  end)

  tg:wait() -- the same as leaving the block; here so we can print after
  return count, sum, peak
end

local opts = parse_args(arg)
local status = lunio.run(function()
  local ok, count, sum, peak = lunio.pcall(pipeline, opts)
  if not ok then
    local err = count
    if not lunio.is_error(err, "task_group") then error(err, 0) end
    print(("pipeline failed: %d error(s)"):format(#err.errors))
    for _, e in ipairs(err.errors) do print("  " .. e.kind .. ": " .. e.message) end
    -- (print(err) shows the same list, each error with its traceback)
    return 1
  end
  print(("items: %d, workers: %d, queue maxsize: %d"):format(opts.items,
    opts.workers, opts.maxsize))
  print(("collected %d squares, sum %d"):format(count, sum))
  print(("peak queue size %d (bounded by %d)"):format(peak, opts.maxsize))
  return 0
end)
os.exit(status)
