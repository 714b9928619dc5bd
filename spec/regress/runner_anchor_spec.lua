-- A runner coroutine resumed for a woken task A goes on, once A is done, with
-- the new tasks queued behind it. When one of them (B) then waited, the
-- runner was recorded as B's only when B's coroutine pointer differed from
-- it, which it never did: nothing referenced the runner while B waited, and
-- a collection freed it (use-after-free found by valgrind).
local lunio = require "lunio"

describe("regress: runner coroutine kept alive", function()
  it("belongs to a new task that waits after the resumed one finished",
    lunio.testing.async(function()
      local a = lunio.create_task(function()
        lunio.sleep(0) -- parks in its runner, woken on the next tick
        return "a"
      end)
      lunio.sleep(0) -- a runs and parks
      -- b is queued right behind a: the runner that finishes a starts b
      local b = lunio.create_task(function()
        lunio.sleep(0.01) -- waits in the runner it inherited
        return "b"
      end)
      assert.are.equal("a", a:await())
      for _ = 1, 3 do collectgarbage() end -- b's runner must survive this
      local junk = {}
      for i = 1, 10000 do junk[i] = { i } end -- reuses the freed memory
      assert.are.equal(10000, #junk)
      assert.are.equal("b", b:await())
    end))
end)
