-- An await inside a lunio.coroutine resumed where Lua cannot yield (from
-- table.sort's comparator) parked the task, then failed to yield it
-- ("attempt to yield across a C-call boundary"); the task ran on while
-- marked waiting, its next sleep entered the timer heap twice and the
-- loop spun eating memory. Now the inner await fails at once with the
-- "cannot wait here" error, and nothing was parked.
local lunio = require "lunio"
local h = require "helper"
local async = h.async

describe("regress: await where the task cannot yield", function()
  it("inside a lunio.coroutine resumed from a C function raises clearly",
    async(function()
      local t = lunio.spawn(function()
        local ok, err = pcall(table.sort, { 3, 2, 1 }, function(a, b)
          lunio.coroutine.wrap(function() lunio.sleep(0.01) end)()
          return a < b
        end)
        lunio.sleep(0.01) -- a second heap entry here used to spin the loop
        return ok, err
      end)
      local ok, err = t:await()
      assert.is_false(ok)
      assert.matches("'sleep' cannot wait here", err, 1, true)
      -- the loop is consistent: timers still work
      local t0 = lunio.now()
      lunio.sleep(0.02)
      assert.is_true(lunio.now() - t0 >= 0.02)
    end))

  it("directly inside table.sort raises the same error", async(function()
    local ok, err = pcall(table.sort, { 2, 1 }, function(a, b)
      lunio.sleep(0)
      return a < b
    end)
    assert.is_false(ok)
    assert.matches("'sleep' cannot wait here", err, 1, true)
  end))

  it("a generator that does not await still works inside table.sort",
    async(function()
      local t = { 3, 1, 2 }
      table.sort(t, function(a, b)
        local gen = lunio.coroutine.wrap(function() coroutine.yield(a < b) end)
        return gen()
      end)
      assert.are.same({ 1, 2, 3 }, t)
    end))
end)
