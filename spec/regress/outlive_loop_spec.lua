-- Futures were not anchored, and loop teardown neither settled nor
-- detached them; it released the loop's registry refs while the integers
-- stayed in the structs. A Future kept after its loop was collected wrote
-- into freed memory (add_done_callback), and after close() it wrote into
-- whatever table reused the registry slot. Now the loop's tables are its
-- own (its state table, not reused registry slots) and closing a loop
-- settles (cancels) and detaches everything still pending on it.
local lunio = require "lunio"
local h = require "helper"

describe("regress: objects that outlive their loop", function()
  it("a pending Future of a collected loop raises 'closed', no use-after-free",
    function()
      local out, err, code = h.lua([[
        local lunio = require "lunio"
        local f
        do
          local loop = lunio.new_loop()
          loop:run(function() f = lunio.Future() end)
        end
        collectgarbage(); collectgarbage()
        local junk = {}
        for i = 1, 200 do junk[i] = lunio.new_loop() end
        print(f:done(), f:cancelled())
        print(pcall(f.add_done_callback, f, function() print("cb") end))
        print(pcall(f.set_result, f, 1))
        print(pcall(f.result, f))
        for i = 1, #junk do junk[i]:close() end
      ]])
      assert.are.equal(0, code, err)
      local lines = {}
      for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.are.equal("true\ttrue", lines[1])
      assert.matches("^false\tclosed: its loop is closed", lines[2])
      assert.matches("^false\tclosed: its loop is closed", lines[3])
      assert.matches("^false\tcancelled: the loop was closed", lines[4])
      assert.is_nil(out:find("cb", 1, true))
    end)

  it("after close() without collection, another loop's tables are untouched",
    function()
      local f
      local a = lunio.new_loop()
      a:run(function() f = lunio.Future() end)
      a:close()
      local b = h.new_loop()
      local seen = {}
      b:run(function()
        local g = lunio.Future()
        g:add_done_callback(function() seen[#seen + 1] = "g" end)
        assert.are.equal("closed", h.kind_of(f.add_done_callback, f, function()
          seen[#seen + 1] = "f"
        end))
        g:set_result(1)
        lunio.sleep(0)
        lunio.sleep(0)
      end)
      b:close()
      assert.are.same({ "g" }, seen)
    end)

  it("tasks of a closed loop are settled; their methods stay safe", function()
    local waiting, done_task
    local loop = lunio.new_loop()
    -- stop() leaves the tasks pending; collecting the loop settles them
    pcall(loop.run, loop, function()
      done_task = lunio.spawn(function() return 42 end)
      waiting = lunio.spawn(function() lunio.sleep(10) end)
      lunio.sleep(0)
      lunio.get_running_loop():stop()
      lunio.sleep(10)
    end)
    assert.are.equal("waiting", waiting:state())
    loop = nil -- luacheck: ignore 311 (dropping the last reference is the point)
    collectgarbage(); collectgarbage()
    assert.are.equal(42, done_task:result())
    assert.is_true(waiting:cancelled())
    assert.are.equal("cancelled", h.kind_of(waiting.result, waiting))
    assert.is_false(waiting:cancel())
    assert.are.equal("closed", h.kind_of(waiting.add_done_callback, waiting, print))
    assert.are.equal(0, waiting:remove_done_callback(print))
    assert.are.equal("", waiting:traceback())
    lunio.run(function() assert.are.equal(42, done_task:await()) end)
  end)

  it("the methods of a closed Loop raise 'closed'", function()
    local loop = lunio.new_loop()
    loop:close()
    for _, m in ipairs({ "time", "all_tasks", "stop", "active_handles" }) do
      assert.are.equal("closed", h.kind_of(loop[m], loop))
    end
    assert.are.equal("closed", h.kind_of(loop.call_soon, loop, print))
    assert.are.equal("closed", h.kind_of(loop.create_task, loop, print))
    assert.are.equal("closed", h.kind_of(loop.run, loop, print))
    loop:close() -- idempotent
    assert.is_true(loop:is_closed())
  end)
end)
