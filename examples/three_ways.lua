-- Three ways to start a task, the ones asyncio tutorials show:
--
--   asyncio.create_task(task())             -- a coroutine function
--   asyncio.create_task(lambda: ...)        -- an anonymous function
--   asyncio.create_task(MyTask("World"))    -- an object with __call__
--
-- In lunio a task is started from anything callable: a named function, an
-- anonymous function, or a table with a __call metamethod. Arguments go
-- after the callable; the task starts on the next scheduler tick.
--
--   lua5.4 examples/three_ways.lua
--
-- (The tutorials' `create_task(f); asyncio.run(asyncio.sleep(0))` also
-- works: `lunio.create_task(f); lunio.run(lunio.sleep, 0)`. Awaiting the
-- tasks, as below, is the reliable way to wait for them.)
local lunio = require "lunio"

-- 1. A named function, with an argument.
local function greet(who)
  lunio.sleep(0.01)
  print(("%s: hello, %s, from a named function"):format(lunio.current_task().name, who))
  return "greet"
end

-- 3. A callable table: an object whose __call runs as the task body. Its
--    `name` field becomes the task's name.
local Greeter = {}
Greeter.__index = Greeter

function Greeter.new(name, who)
  return setmetatable({ name = name, who = who }, Greeter)
end

function Greeter:__call()
  lunio.sleep(0.01)
  print(("%s: hello, %s, from a callable table"):format(lunio.current_task().name, self.who))
  return self.name
end

lunio.run(function()
  local named = lunio.create_task(greet, "world")

  -- 2. An anonymous function.
  local anonymous = lunio.create_task(function()
    lunio.sleep(0.01)
    print(("%s: hello from an anonymous function"):format(lunio.current_task().name))
    return "anonymous"
  end)

  local greeter = Greeter.new("greeter", "world")
  local callable = lunio.create_task(greeter)
  callable:set_name(greeter.name)

  -- The three run concurrently; wait for each and collect what it returned.
  local results = {}
  for _, task in ipairs({ named, anonymous, callable }) do
    results[#results + 1] = task:await()
  end
  print("done: " .. table.concat(results, ", "))
end)
