-- A task that failed with nobody awaiting it was given a metatable with
-- __gc at that moment (to report the error if it is never retrieved); Lua's
-- lua_setmetatable then searches the collector's list of every object for
-- it, so each such failure cost time proportional to the objects created
-- since the task was: in the cancellation storm (issue 14), 20,000 tasks
-- ending in a timeout took minutes. Now a small watcher object made at the
-- failure carries the __gc. The guard is a ratio measured in one process.
local lunio = require "lunio"

-- CPU seconds for n tasks, spawned before `live` other objects exist, to
-- finish (failing when `fail`), and whether every error was kept.
local function cost(n, live, fail)
  local gate = lunio.Event()
  local tasks = {}
  for i = 1, n do
    tasks[i] = lunio.spawn(function()
      gate:wait()
      if fail then error({ i = i }) end
      return i
    end)
  end
  lunio.sleep(0)
  local keep = {}
  for i = 1, live do keep[i] = {} end
  local c0 = os.clock()
  gate:set()
  lunio.sleep(0)
  lunio.sleep(0)
  local took = os.clock() - c0
  for i = 1, n do
    assert(tasks[i]:done())
    if fail then assert(tasks[i]:error().i == i) end
  end
  return took, #keep
end

describe("regress: failing tasks #scale #novalgrind", function()
  it("cost no more when many objects were made since they started", function()
    lunio.run(function()
      local few, many = math.huge, math.huge
      for _ = 1, 3 do
        few = math.min(few, (cost(2000, 1000, true)))
        many = math.min(many, (cost(2000, 300000, true)))
      end
      assert.is_true(many <= 2 * few + 0.01,
        ("2,000 failing tasks: %.4f s after 1,000 objects, %.4f s after 300,000")
          :format(few, many))
    end)
  end)

  it("still reports an error nobody retrieved when the task is collected", function()
    local reports = {}
    lunio.set_exception_handler(function(ctx) reports[#reports + 1] = ctx end)
    finally(function() lunio.set_exception_handler(nil) end)
    local marker = {}
    lunio.run(function()
      do
        local t = lunio.spawn(error, marker)
        lunio.sleep(0)
        assert.is_true(t:done())
      end
      for _ = 1, 3 do
        collectgarbage()
        lunio.sleep(0)
      end
      local seen = 0
      for _, ctx in ipairs(reports) do
        if ctx.error == marker then
          seen = seen + 1
          assert.matches("never retrieved", ctx.message)
          assert.is_true(ctx.task:done())
        end
      end
      assert.are.equal(1, seen)
    end)
  end)
end)
