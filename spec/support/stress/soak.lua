-- Soak (started by spec/stress_soak_spec.lua; runs by hand too):
--
--   lua5.4 spec/support/stress/soak.lua SECONDS [HTTP_BASE]
--
-- One process, one lunio.run, for SECONDS: a mixed workload (WORKLOADS
-- below: spawn bursts, sleepers, a bounded queue, locks and semaphores,
-- timeouts that fire, HTTP through one Session and through short-lived
-- ones, fs, to_thread, streams and subprocesses). Every second a sampler records
-- RSS, malloc's bytes in use, open descriptors, active libuv handles and
-- pending tasks. Prints:
--   start   (the figures before the workload)
--   sample  t= rss= heap= fds= handles= tasks= ops=    one a second
--           (each after a full collection)
--   summary seconds= samples= warmup= and, over the samples after the
--           warm-up, NAME_min= NAME_max= for rss heap fds handles tasks,
--           plus ops= (operations completed) and errors=
--   end     (the figures after the workers stopped; as at the start)
--   ok
-- A worker error that is not a documented kind ends the run (exit 1).
local S = require "support.stress"
local lunio = require "lunio"

local SECONDS = tonumber(arg[1] or "") or 60
local BASE = arg[2]
local WARMUP = math.max(5, math.floor(SECONDS * 0.2))

local random = math.random
math.randomseed(1414)
local sleep = lunio.sleep

local ops, errors = 0, 0
local DOC_KINDS = {}
for _, k in ipairs(S.DOC_KINDS) do DOC_KINDS[k] = true end

-- Runs `step` in a loop until cancelled; counts its completions. A failure
-- of a documented kind is counted (timeouts do happen under load); any
-- other ends the soak.
local function worker(name, step, ctx)
  return lunio.spawn(function()
    while true do
      local ok, err = lunio.pcall(step, ctx)
      if ok then
        ops = ops + 1
      elseif lunio.is_error(err) and DOC_KINDS[err.kind] then
        errors = errors + 1
      else
        error(name .. ": " .. tostring(err), 0)
      end
    end
  end)
end

local crunch = S.crunch

-- Each workload: `name`, `workers` (how many
-- run its `step` in a loop), `setup(ctx)` and `teardown(ctx)` around the
-- run, and `prime()`: run before the start figures, for what a loop keeps
-- once it was needed.
local WORKLOADS = {
  { name = "spawn", workers = 2, step = function()
    local list = {}
    for i = 1, random(50, 500) do list[i] = lunio.spawn(function(x) sleep(0) return x end, i) end
    local got = lunio.gather(list)
    assert(#got == #list)
  end },
  { name = "sleep", workers = 20, step = function() sleep(random() * 0.05) end },
  { name = "queue", workers = 1, setup = function(ctx)
    ctx.q = lunio.Queue(16)
    ctx.producer = lunio.spawn(function()
      local i = 0
      while true do
        i = i + 1
        ctx.q:put(i)
        if i % 100 == 0 then sleep(0.001) end
      end
    end)
  end, step = function(ctx)
    for _ = 1, 100 do ctx.q:get() end
  end, teardown = function(ctx) ctx.producer:cancel() end },
  { name = "lock", workers = 4, setup = function(ctx)
    ctx.lock, ctx.sem = lunio.Lock(), lunio.Semaphore(2)
  end, step = function(ctx)
    local _ <close> = ctx.lock:acquire()
    local _ <close> = ctx.sem:acquire()
    sleep(0.001)
  end },
  { name = "timeout", workers = 4, step = function()
    -- lunio.pcall: a plain pcall would swallow the worker's cancellation
    local ok = lunio.pcall(lunio.wait_for, function() sleep(0.02) end, random() * 0.04)
    local scope_ok = lunio.pcall(function()
      local _ <close> = lunio.timeout(0.005)
      sleep(0.01)
    end)
    assert(ok ~= nil and scope_ok == false)
  end },
  { name = "http", workers = 8, setup = function(ctx)
    ctx.session = lunio.http.Session({ max_connections = 8 })
  end, step = function(ctx)
    local r = random()
    if r < 0.9 then
      local resp = ctx.session:get(BASE .. (r < 0.6 and "/small.txt" or "/gzip.txt"))
      assert(resp.status == 200)
    else -- a Session of its own, opened and closed
      local s <close> = lunio.http.Session()
      assert(s:get(BASE .. "/small.txt").status == 200)
    end
  end, teardown = function(ctx) ctx.session:close() end },
  { name = "fs", workers = 2, setup = function(ctx)
    ctx.dir = lunio.fs.mkdtemp("/tmp/lunio-soak-")
    ctx.files = 0
  end, step = function(ctx)
    ctx.files = ctx.files + 1
    local path = ctx.dir .. "/f" .. ctx.files
    lunio.fs.write_file(path, ("x"):rep(random(1, 65536)))
    local f <close> = lunio.fs.open(path, "r")
    f:read(4096)
    lunio.fs.stat(path)
    lunio.fs.remove(path)
  end, teardown = function(ctx)
    for name in lunio.fs.scandir(ctx.dir) do lunio.fs.remove(ctx.dir .. "/" .. name) end
    lunio.fs.rmdir(ctx.dir)
  end },
  { name = "to_thread", workers = 2, step = function()
    assert(lunio.to_thread(crunch, 20000) == crunch(20000))
  end },
  { name = "stream", workers = 4, prime = function()
    -- libuv keeps one descriptor per loop from its first stream on (its
    -- reserve for EMFILE): open it before the start figures
    local _ <close> = lunio.start_server(function() end, "127.0.0.1", 0)
  end, setup = function(ctx)
    ctx.server = lunio.start_server(function(st)
      for line in st:lines() do st:write(line .. "\n") end
    end, "127.0.0.1", 0)
  end, step = function(ctx)
    local st <close> = lunio.open_connection("127.0.0.1", ctx.server.port)
    for i = 1, 20 do
      st:write(i .. "\n")
      assert(st:read_line() == tostring(i))
    end
  end, teardown = function(ctx) ctx.server:close({ abort = true }) end },
  { name = "subprocess", workers = 1, step = function()
    assert(lunio.subprocess.run({ "true" }).code == 0)
    sleep(0.1)
  end },
}

-- The figures now, after a full collection (so that `heap` is what is
-- live, not what the collector has yet to free).
local function figures(loop)
  S.settle()
  return S.sample(loop)
end

lunio.run(function()
  local loop = lunio.get_running_loop()
  local ctx, workers = {}, {}
  -- SOAK_ONLY="http,fs": only those
  local present = S.pick(WORKLOADS, os.getenv("SOAK_ONLY"), BASE)
  for _, w in ipairs(present) do
    if w.prime then w.prime() end
  end
  sleep(0.01)
  S.line("start", figures(loop))
  for _, w in ipairs(present) do
    if w.setup then w.setup(ctx) end
    for _ = 1, w.workers do workers[#workers + 1] = worker(w.name, w.step, ctx) end
  end
  local samples = {}
  local t0 = lunio.now()
  local failed
  while lunio.now() - t0 < SECONDS do
    sleep(1)
    for _, t in ipairs(workers) do
      if t:done() then failed = t:error() end
    end
    if failed then break end
    local s = figures(loop)
    s.t = math.floor(lunio.now() - t0 + 0.5)
    s.ops = ops
    samples[#samples + 1] = s
    S.line("sample", s)
  end
  for _, t in ipairs(workers) do t:cancel() end
  lunio.wait(workers)
  for i = #present, 1, -1 do
    if present[i].teardown then present[i].teardown(ctx) end
  end
  if failed then error(failed, 0) end

  local summary = { seconds = SECONDS, samples = #samples, warmup = WARMUP, ops = ops,
    errors = errors }
  for _, k in ipairs({ "rss", "heap", "fds", "handles", "tasks" }) do
    local lo, hi
    for _, s in ipairs(samples) do
      if s.t > WARMUP and s[k] then
        lo = math.min(lo or s[k], s[k])
        hi = math.max(hi or s[k], s[k])
      end
    end
    summary[k .. "_min"], summary[k .. "_max"] = lo, hi
  end
  S.line("summary", summary)
  sleep(0.1) -- the close callbacks of what the teardowns closed
  S.settle()
  S.line("end", figures(loop))
end)
S.line("ok")
