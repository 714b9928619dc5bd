--- The smallest idiomatic task layer on luv, shared by the luv peers:
--- luv itself has only callbacks, so a task is a coroutine, a ready queue
--- is drained by one uv_idle handle (each pass runs only the tasks that
--- were ready when it started, so sleep(0) yields to every other ready
--- task once), and sleep(d > 0) uses one uv_timer per sleep, the way
--- luvit's coro-* helpers do. uv.run() returns when nothing is left.
local uv = require "luv"

local M = { uv = uv }
local create, resume, yield, running = coroutine.create, coroutine.resume,
  coroutine.yield, coroutine.running

local ready, head, tail = {}, 1, 0
local idle = uv.new_idle()
local idle_on = false

local function run_ready()
  local last = tail
  for i = head, last do
    local co = ready[i]
    ready[i] = nil
    local ok, err = resume(co)
    if not ok then error(debug.traceback(co, err), 0) end
  end
  head = last + 1
  if head > tail then
    idle:stop()
    idle_on = false
  end
end

local function schedule(co)
  tail = tail + 1
  ready[tail] = co
  if not idle_on then
    idle:start(run_ready)
    idle_on = true
  end
end
M.schedule = schedule

--- spawn(fn [, arg]) -> task; the task starts on the next loop pass.
function M.spawn(fn, arg)
  local task = { done = false }
  task.co = create(function()
    task.result = fn(arg)
    task.done = true
    local w = task.waiters
    if w then
      for i = 1, #w do schedule(w[i]) end
    end
  end)
  schedule(task.co)
  return task
end

--- await(task) -> its result (from inside a task).
function M.await(task)
  if not task.done then
    local w = task.waiters
    if not w then
      w = {}
      task.waiters = w
    end
    w[#w + 1] = running()
    repeat yield() until task.done
  end
  return task.result
end

--- sleep(seconds) from inside a task (millisecond timers, as luv has).
function M.sleep(d)
  local co = running()
  if d <= 0 then
    schedule(co)
    yield()
    return
  end
  local t = uv.new_timer()
  t:start(math.floor(d * 1000 + 0.5), 0, function()
    t:close()
    local ok, err = resume(co)
    if not ok then error(debug.traceback(co, err), 0) end
  end)
  yield()
end

--- run(fn): runs fn as the main task until the loop has nothing left.
function M.run(fn, ...)
  M.spawn(fn, ...)
  uv.run()
end

return M
