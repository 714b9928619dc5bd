-- A libuv request that finished and woke its task was freed only by that
-- task's continuation. When the loop was then collected without close()
-- before the task ran again, the request (and what it held: an opened
-- file descriptor, a buffer) was never freed. The loop now lists such
-- requests and frees them when it is torn down.
local lunio = require "lunio"
local core = require "lunio.core"

describe("regress: a finished request whose task never runs again", function()
  it("is freed, with its descriptor, when the loop is collected", function()
    local path = os.tmpname()
    lunio.new_loop():close() -- libuv's process-wide descriptors, once
    collectgarbage()
    collectgarbage()
    local fds = core.open_fds()
    for _ = 1, 5 do
      local loop = lunio.new_loop()
      loop:set_signals(false)
      local opened = false
      pcall(loop.run, loop, function()
        lunio.spawn(function()
          local f = lunio.fs.open(path) -- the open finishes in the pool ...
          opened = true
          f:close()
        end)
        lunio.sleep(0) -- the open is in flight
        local t0 = os.clock()
        while os.clock() - t0 < 0.05 do end -- ... while this holds the loop
        lunio.get_running_loop():stop()
        lunio.sleep(0.001) -- one libuv pass delivers it; the loop stops
      end)
      assert.is_false(opened)
      loop = nil -- luacheck: ignore 311 (collected without close())
      collectgarbage()
      collectgarbage()
    end
    collectgarbage()
    assert.are.equal(fds, core.open_fds())
    os.remove(path)
  end)
end)
