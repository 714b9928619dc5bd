-- Cancellation storm (started by spec/stress_storm_spec.lua; runs by hand):
--
--   lua5.4 spec/support/stress/storm.lua N SEED [HTTP_BASE]
--   (environment: STORM_WARMUPS, default 2; STORM_KINDS=a,b runs only
--   those kinds)
--
-- Spawns N tasks, each parked in one kind of await (KINDS below: sleep,
-- queues, locks, semaphores, events, conditions, futures, combinators,
-- task groups, timeout scopes, HTTP transfers, fs calls, to_thread,
-- signal.wait, lunio.coroutine, awaits in __close; stream read/write and
-- subprocess wait once those modules exist), and cancels them at moments
-- drawn from a generator seeded with SEED: some before they start, most at
-- a uniform moment in the first second, some twice, and every one still
-- pending after that. HTTP_BASE is the nginx fixture's base URL
-- (http://127.0.0.1:PORT); without it the HTTP kind is skipped.
--
-- Afterwards: no task pending, no libuv handle active, no resource open,
-- the descriptors exactly as before, malloc's bytes in use and the RSS
-- (after malloc_trim) within 10 % of the baseline, no report of a lost
-- error, and the loop still serves one of each kind without cancellation.
-- Prints (figures as support/stress.lua formats them):
--   seed=S tasks=N kinds=K
--   start     tasks= handles= resources= fds= heap= rss= rss_trim= lua=
--   warm-up W (after each warm-up storm of the same size) the same fields
--   baseline  (the last warm-up's counts, the warm-ups' largest memory)
--   storm     seconds= peak_rss= finished= cancelled= timeout= failed=
--   kind NAME n= finished= cancelled= timeout=       one per kind
--   after     (same fields as baseline)
--   served    kinds=K
--   ok
-- Any failure raises (exit status 1) after printing what went wrong.
local S = require "support.stress"
local lunio = require "lunio"

local N = math.tointeger(tonumber(arg[1] or "")) or 100000
local SEED = math.tointeger(tonumber(arg[2] or "")) or S.seed("STORM_SEED")
local BASE = arg[3]
local WARMUPS = math.tointeger(tonumber(os.getenv("STORM_WARMUPS") or "")) or 2
math.randomseed(SEED)

local random = math.random
local sleep = lunio.sleep

-- A short random delay (seconds): most awaits are cut by a cancellation,
-- some finish first.
local function short() return random() * 0.3 end
local function long() return 5 + random() * 5 end

local crunch = S.crunch

-- Each kind: name, optional `weight` (share of
-- the tasks, default 1), `setup(ctx)` (shared objects, once per storm),
-- `body(ctx)` (the task: parks in the kind's await), `teardown(ctx)`, and
-- `serve(ctx)`: one uncancelled run that must succeed afterwards.
local KINDS = {
  {
    name = "sleep",
    body = function() sleep(random() < 0.5 and short() or long()) end,
    serve = function() assert(sleep(0.001, "v") == "v") end,
  },
  {
    name = "queue_get",
    setup = function(ctx) ctx.q_empty = lunio.Queue() end,
    body = function(ctx) ctx.q_empty:get() end,
    serve = function()
      local q = lunio.Queue()
      local t = lunio.spawn(q.get, q)
      q:put(7)
      assert(t:await() == 7)
    end,
  },
  {
    name = "queue_put",
    setup = function(ctx)
      ctx.q_full = lunio.Queue(1)
      ctx.q_full:put_nowait(0)
      ctx.q_prio = lunio.PriorityQueue(1)
      ctx.q_prio:put_nowait(0)
    end,
    body = function(ctx)
      if random() < 0.5 then ctx.q_full:put(1) else ctx.q_prio:put(random(100)) end
    end,
    serve = function()
      local q = lunio.LifoQueue(1)
      q:put(1)
      local t = lunio.spawn(q.put, q, 2)
      assert(q:get() == 1)
      t:await()
      assert(q:get() == 2)
    end,
  },
  {
    name = "lock",
    setup = function(ctx) ctx.lock = lunio.Lock() end,
    body = function(ctx)
      local _ <close> = ctx.lock:acquire()
      sleep(short())
    end,
    serve = function()
      local lock = lunio.Lock()
      local _ <close> = lock:acquire()
      assert(lock:locked())
    end,
  },
  {
    name = "semaphore",
    setup = function(ctx) ctx.sem = lunio.BoundedSemaphore(3) end,
    body = function(ctx)
      local _ <close> = ctx.sem:acquire()
      sleep(short())
    end,
    serve = function()
      local sem = lunio.Semaphore(1)
      local _ <close> = sem:acquire()
      assert(sem:value() == 0)
    end,
  },
  {
    name = "event",
    setup = function(ctx)
      ctx.event = lunio.Event()
      -- sets and clears it now and then: some waiters get through
      ctx.event_toggler = lunio.spawn(function()
        while true do
          sleep(random() * 0.2)
          ctx.event:set()
          sleep(0)
          ctx.event:clear()
        end
      end)
    end,
    body = function(ctx) ctx.event:wait() end,
    teardown = function(ctx) ctx.event_toggler:cancel() end,
    serve = function()
      local ev = lunio.Event()
      local t = lunio.spawn(ev.wait, ev)
      ev:set()
      assert(t:await() == true)
    end,
  },
  {
    name = "condition",
    setup = function(ctx)
      ctx.cond = lunio.Condition()
      ctx.notifier = lunio.spawn(function()
        while true do
          sleep(random() * 0.1)
          local _ <close> = ctx.cond:acquire()
          ctx.cond:notify(random(5))
        end
      end)
    end,
    body = function(ctx)
      local _ <close> = ctx.cond:acquire()
      ctx.cond:wait()
    end,
    teardown = function(ctx) ctx.notifier:cancel() end,
    serve = function()
      local cond, ready = lunio.Condition(), false
      local t = lunio.spawn(function()
        local _ <close> = cond:acquire()
        cond:wait_for(function() return ready end)
        return "woke"
      end)
      sleep(0)
      do
        local _ <close> = cond:acquire()
        ready = true
        cond:notify_all()
      end
      assert(t:await() == "woke")
    end,
  },
  {
    name = "future",
    body = function()
      local f = lunio.Future()
      if random() < 0.3 then
        lunio.get_running_loop():call_later(short(), function()
          if not f:done() then f:set_result(1) end
        end)
      end
      f:await()
    end,
    serve = function()
      local f = lunio.Future()
      lunio.get_running_loop():call_soon(f.set_result, f, "r")
      assert(f:await() == "r")
    end,
  },
  {
    name = "task_await",
    body = function()
      local child = lunio.spawn(sleep, short())
      child:await()
    end,
    serve = function() assert(lunio.spawn(sleep, 0, 5):await() == 5) end,
  },
  {
    name = "gather",
    body = function()
      if random() < 0.5 then
        lunio.gather(function() sleep(short()) end, function() sleep(long()) end)
      else
        lunio.gather({ function() sleep(short()) end, function() sleep(short()) end },
          { return_errors = true })
      end
    end,
    serve = function()
      local a, b = lunio.gather(function() return 1 end, function() sleep(0) return 2 end)
      assert(a == 1 and b == 2)
    end,
  },
  {
    name = "wait",
    body = function()
      local a, b = lunio.spawn(sleep, short()), lunio.spawn(sleep, short())
      local _, pending = lunio.wait({ a, b }, { return_when = "first_completed" })
      for _, t in ipairs(pending) do t:cancel() end
    end,
    serve = function()
      local done = lunio.wait({ lunio.spawn(sleep, 0) })
      assert(#done == 1)
    end,
  },
  {
    name = "as_completed",
    body = function()
      for t in lunio.as_completed({ lunio.spawn(sleep, short()), lunio.spawn(sleep, short()) }) do
        t:await()
      end
    end,
    serve = function()
      local n = 0
      for _ in lunio.as_completed({ lunio.spawn(sleep, 0), lunio.spawn(sleep, 0.001) }) do
        n = n + 1
      end
      assert(n == 2)
    end,
  },
  {
    name = "task_group",
    body = function()
      local tg <close> = lunio.TaskGroup()
      tg:spawn(sleep, short())
      tg:spawn(sleep, long())
      if random() < 0.2 then tg:spawn(function() sleep(short()) error("child failed") end) end
    end,
    -- a child's own failure is a "task_group" error: an expected outcome
    expected = { task_group = true },
    serve = function()
      local tg <close> = lunio.TaskGroup()
      local t = tg:spawn(function() return "x" end)
      tg:wait()
      assert(t:result() == "x")
    end,
  },
  {
    name = "timeout_scope",
    body = function()
      local _ <close> = lunio.timeout(short())
      sleep(short())
    end,
    expected = { timeout = true },
    serve = function()
      local ok, err = pcall(function()
        local _ <close> = lunio.timeout(0.001)
        sleep(1)
      end)
      assert(not ok and lunio.is_error(err, "timeout"))
    end,
  },
  {
    name = "wait_for",
    body = function() lunio.wait_for(function() sleep(short()) end, short()) end,
    expected = { timeout = true },
    serve = function() assert(lunio.wait_for(function() return 3 end, 1) == 3) end,
  },
  {
    name = "shield",
    body = function() lunio.shield(function() sleep(short()) end) end,
    serve = function() assert(lunio.shield(function() return 4 end) == 4) end,
  },
  {
    name = "coroutine",
    body = function()
      local gen = lunio.coroutine.wrap(function()
        for i = 1, 3 do
          sleep(short() / 3)
          coroutine.yield(i)
        end
      end)
      for _ = 1, 3 do gen() end
    end,
    serve = function()
      local gen = lunio.coroutine.wrap(function() sleep(0) coroutine.yield(9) end)
      assert(gen() == 9)
    end,
  },
  {
    name = "close_await",
    -- cleanup that itself awaits: a second cancellation may hit it there
    body = function()
      local _ <close> = setmetatable({}, { __close = function() sleep(0.01) end })
      sleep(short())
    end,
    serve = function()
      local closed = false
      do
        local _ <close> = setmetatable({}, { __close = function() sleep(0) closed = true end })
      end
      assert(closed)
    end,
  },
  {
    name = "http",
    weight = 0.5,
    setup = function(ctx)
      ctx.session = lunio.http.Session()
      ctx.slow, ctx.big = BASE .. "/slow", BASE .. "/big.bin"
    end,
    body = function(ctx)
      local r = random()
      if r < 0.4 then
        ctx.session:get(ctx.slow)
      elseif r < 0.7 then
        local resp <close> = ctx.session:get(ctx.big, { stream = true })
        for _ in resp:chunks() do end
      else
        ctx.session:get(ctx.big)
      end
    end,
    teardown = function(ctx) ctx.session:close() end,
    serve = function(ctx)
      local s <close> = lunio.http.Session()
      local resp = s:get(ctx.base .. "/small.txt")
      assert(resp.status == 200 and #resp.body == 1024)
    end,
  },
  {
    name = "fs",
    setup = function(ctx)
      ctx.dir = lunio.fs.mkdtemp("/tmp/lunio-storm-")
      ctx.file = ctx.dir .. "/data"
      lunio.fs.write_file(ctx.file, ("0123456789abcdef"):rep(16384)) -- 256 KiB
    end,
    body = function(ctx)
      while true do
        local r = random()
        if r < 0.4 then
          lunio.fs.read_file(ctx.file)
        elseif r < 0.7 then
          local f <close> = lunio.fs.open(ctx.file, "r")
          f:read(4096, random(0, 200000))
        else
          lunio.fs.stat(ctx.file)
        end
      end
    end,
    teardown = function(ctx)
      lunio.fs.remove(ctx.file)
      lunio.fs.rmdir(ctx.dir)
    end,
    serve = function(ctx)
      local dir = lunio.fs.mkdtemp("/tmp/lunio-storm-")
      lunio.fs.write_file(dir .. "/f", "x")
      assert(lunio.fs.read_file(dir .. "/f") == "x")
      lunio.fs.remove(dir .. "/f")
      lunio.fs.rmdir(dir)
      assert(ctx)
    end,
  },
  {
    name = "to_thread",
    weight = 0.5,
    body = function() lunio.to_thread(crunch, 20000) end,
    serve = function() assert(lunio.to_thread(crunch, 10) == crunch(10)) end,
  },
  {
    name = "signal",
    -- SIGWINCH is ignored by default, so sending it to ourselves is
    -- harmless even when nobody watches it; SIGUSR2 is never sent
    setup = function(ctx)
      local stat = io.open("/proc/self/stat")
      local pid = stat and stat:read("n")
      if stat then stat:close() end
      ctx.winches = 0
      ctx.on_winch = lunio.signal.on("SIGWINCH", function() ctx.winches = ctx.winches + 1 end)
      ctx.winch = lunio.spawn(function()
        while pid do
          sleep(0.1)
          os.execute("kill -WINCH " .. pid)
        end
      end)
    end,
    body = function()
      lunio.signal.wait(random() < 0.5 and "SIGWINCH" or "SIGUSR2")
    end,
    teardown = function(ctx)
      ctx.winch:cancel()
      ctx.on_winch:close()
    end,
    serve = function()
      local t = lunio.spawn(lunio.signal.wait, "SIGUSR2")
      sleep(0)
      t:cancel()
      assert(not pcall(t.await, t) and t:cancelled())
    end,
  },
  {
    name = "stream",
    setup = function(ctx)
      -- a server that accepts and never reads nor writes: reads wait for
      -- data, writes of 1 MiB wait for the peer to drain
      ctx.server = lunio.start_server(function() sleep(1e9) end, "127.0.0.1", 0)
    end,
    body = function(ctx)
      local s <close> = lunio.open_connection("127.0.0.1", ctx.server.port)
      if random() < 0.5 then
        s:read()
      else
        s:write(("x"):rep(1 << 20))
        s:drain()
      end
    end,
    teardown = function(ctx) ctx.server:close({ abort = true }) end,
    serve = function()
      local server <close> = lunio.start_server(function(st) st:write(st:read_line() .. "\n") end,
        "127.0.0.1", 0)
      local s <close> = lunio.open_connection("127.0.0.1", server.port)
      s:write("hi\n")
      assert(s:read_line() == "hi")
    end,
  },
  {
    name = "subprocess",
    weight = 0.02,
    body = function()
      local p = lunio.subprocess.exec({ "sleep", "10" })
      p:wait()
    end,
    serve = function()
      local r = lunio.subprocess.run({ "true" })
      assert(r.code == 0)
    end,
  },
}

local sample = S.settled_sample

-- Runs one storm of n tasks; returns the outcome counts.
local function storm(n, present)
  local loop = lunio.get_running_loop()
  local ctx = { base = BASE }
  for _, k in ipairs(present) do
    if k.setup then k.setup(ctx) end
  end
  local total = 0
  for _, k in ipairs(present) do total = total + (k.weight or 1) end

  local tasks, kind_of = {}, {}
  for i = 1, n do
    local pick, k = random() * total, nil
    for _, kind in ipairs(present) do
      pick = pick - (kind.weight or 1)
      k = kind
      if pick <= 0 then break end
    end
    local t = lunio.spawn(k.body, ctx)
    tasks[i], kind_of[i] = t, k
    local r = random()
    if r < 0.1 then
      t:cancel("storm: before it started")
    else
      local at = random()
      loop:call_later(at, t.cancel, t, "storm")
      if r > 0.95 then loop:call_later(at + random() * 0.02, t.cancel, t, "storm again") end
    end
  end

  -- after the storm's second, everything still pending is cancelled
  sleep(1.05)
  for _, t in ipairs(tasks) do t:cancel("storm: sweep") end
  local _, pending = lunio.wait(tasks, { timeout = 60 })
  if #pending > 0 then
    local names = {}
    for i, t in ipairs(tasks) do
      if not t:done() then names[kind_of[i].name] = (names[kind_of[i].name] or 0) + 1 end
    end
    local list = {}
    for name, c in pairs(names) do list[#list + 1] = name .. "=" .. c end
    table.sort(list)
    print(lunio.dump_tasks():sub(1, 3000))
    error(("%d task(s) still pending 60 s after the sweep: %s"):format(#pending,
      table.concat(list, " ")))
  end

  local counts = { finished = 0, cancelled = 0, expected = 0, failed = 0, by_kind = {} }
  local failures = {}
  for i, t in ipairs(tasks) do
    local k = kind_of[i]
    local c = counts.by_kind[k.name]
    if not c then
      c = { n = 0, finished = 0, cancelled = 0, expected = 0 }
      counts.by_kind[k.name] = c
    end
    c.n = c.n + 1
    local err = t:error()
    if t:cancelled() then
      c.cancelled = c.cancelled + 1
      counts.cancelled = counts.cancelled + 1
    elseif err == nil then
      c.finished = c.finished + 1
      counts.finished = counts.finished + 1
    elseif lunio.is_error(err) and k.expected and k.expected[err.kind] then
      c.expected = c.expected + 1
      counts.expected = counts.expected + 1
    else
      counts.failed = counts.failed + 1
      if #failures < 10 then failures[#failures + 1] = k.name .. ": " .. tostring(err) end
    end
  end
  for i = #present, 1, -1 do
    if present[i].teardown then present[i].teardown(ctx) end
  end
  sleep(0.05) -- close callbacks of what the teardowns closed
  return counts, failures
end

lunio.run(function()
  local loop = lunio.get_running_loop()
  local reports = {}
  lunio.set_exception_handler(function(c) reports[#reports + 1] = c end)
  S.line(("seed=%d tasks=%d"):format(SEED, N))
  -- STORM_KINDS="lock,http": only those
  local present = S.pick(KINDS, os.getenv("STORM_KINDS"), BASE)

  -- Warm-up: storms of the same size first. libcurl, the thread pools and
  -- the signal machinery make their one-time allocations, and the loop and
  -- the modules keep the tables and queues they grew to (about 100 bytes
  -- per task of the peak, reused by the next storm). Lua shrinks a table
  -- only when it rehashes it, so after each storm those tables sit at one
  -- of a few sizes: the baseline for memory is the larger figure of two
  -- warm-up storms. Descriptors, handles and resources must be exactly as
  -- after the last warm-up (a loop may keep one descriptor of its own once
  -- a module needed it: libuv's reserve for EMFILE on accept).
  local start = sample(loop)
  S.line("start", start)
  local before, last = {}, nil
  for w = 1, WARMUPS do
    storm(N, present)
    last = sample(loop)
    S.line("warm-up " .. w, last)
    for k, v in pairs(last) do before[k] = math.max(before[k] or v, v) end
  end
  for _, k in ipairs({ "tasks", "handles", "resources", "streams", "fds" }) do
    before[k] = last[k]
  end
  reports = {}
  S.line("baseline", before)

  local t0 = lunio.now()
  local peak_rss = 0
  local watcher = lunio.spawn(function()
    while true do
      peak_rss = math.max(peak_rss, S.rss_kb())
      sleep(0.05)
    end
  end)
  local counts, failures = storm(N, present)
  watcher:cancel()
  pcall(watcher.await, watcher)
  S.line("storm", { seconds = lunio.now() - t0, peak_rss = peak_rss,
    finished = counts.finished, cancelled = counts.cancelled,
    expected = counts.expected, failed = counts.failed })
  for _, k in ipairs(present) do
    local c = counts.by_kind[k.name] or { n = 0, finished = 0, cancelled = 0, expected = 0 }
    S.line("kind " .. k.name, c)
  end
  local after = sample(loop)
  S.line("after", after)

  local problems = {}
  for _, f in ipairs(failures) do problems[#problems + 1] = "unexpected error: " .. f end
  for _, r in ipairs(reports) do
    problems[#problems + 1] = ("exception handler: %s: %s"):format(tostring(r.message),
      tostring(r.error))
  end
  if after.tasks ~= 1 then problems[#problems + 1] = "tasks pending: " .. after.tasks - 1 end
  for _, k in ipairs({ "handles", "resources", "streams", "fds" }) do
    if after[k] ~= before[k] then
      problems[#problems + 1] = ("%s: %s before, %s after"):format(k, before[k], after[k])
    end
  end
  for _, k in ipairs({ "heap", "rss_trim" }) do
    if after[k] and after[k] > before[k] * 1.10 + 64 then
      problems[#problems + 1] = ("%s grew more than 10 %%: %d -> %d KiB"):format(k,
        before[k], after[k])
    end
  end
  if #problems > 0 then error("storm: " .. table.concat(problems, "\n  "), 0) end

  -- the loop still serves every kind
  local ctx = { base = BASE }
  for _, k in ipairs(present) do
    local ok, err = pcall(lunio.wait_for, function() k.serve(ctx) end, 10)
    if not ok then error(("after the storm, %s failed: %s"):format(k.name, tostring(err)), 0) end
  end
  S.line("served", { kinds = #present })
end)
S.line("ok")
