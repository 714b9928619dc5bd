-- A coroutine parked in a lunio await was resumable by anyone: the await's
-- continuation trusted the task pointer of the running thread, which
-- coro.c cleared after the yield, so coroutine.resume() on a lunio.coroutine
-- parked for another task crashed (null task in sleep_k), and resuming a
-- task's own coroutine ran its body inside the resumer and left a finished
-- task in the timer heap. Now only the scheduler may resume a parked
-- coroutine: anybody else gets a refusal and the task stays parked.
local lunio = require "lunio"
local h = require "helper"
local async = h.async

local REFUSED = "only the scheduler may resume it"

describe("regress: resuming a coroutine parked in an await", function()
  it("coroutine.resume of a lunio.coroutine parked for another task is refused",
    async(function()
      local co = lunio.coroutine.create(function()
        lunio.sleep(0.02)
        return "inner"
      end)
      local a = lunio.spawn(function() return lunio.coroutine.resume(co) end)
      lunio.sleep(0) -- a resumes co, which parks a in sleep
      local ok, err = coroutine.resume(co)
      assert.is_true(ok) -- the resume "succeeded", the refusal was yielded
      assert.is_true(lunio.is_error(err, "invalid_state"))
      assert.matches(REFUSED, err.message, 1, true)
      assert.are.equal("suspended", coroutine.status(co))
      -- a was not harmed: it finishes when its sleep is over
      assert.are.same({ true, "inner" }, { a:await() })
    end))

  it("lunio.coroutine.resume of it raises the error in the resumer", async(function()
    local co = lunio.coroutine.create(function() lunio.sleep(0.02) return 1 end)
    local a = lunio.spawn(lunio.coroutine.resume, co)
    lunio.sleep(0)
    local err = h.catch(lunio.coroutine.resume, co)
    assert.is_true(lunio.is_error(err, "invalid_state"))
    assert.matches(REFUSED, err.message, 1, true)
    assert.are.same({ true, 1 }, { a:await() })
  end))

  it("resuming another task's own coroutine leaves that task parked", async(function()
    local its_co
    local t = lunio.spawn(function()
      its_co = coroutine.running()
      lunio.sleep(0.02)
      return "t done"
    end)
    lunio.sleep(0)
    local me = lunio.current_task()
    local ok, err = coroutine.resume(its_co)
    assert.is_true(ok)
    assert.matches(REFUSED, tostring(err), 1, true)
    assert.are.equal(me, lunio.current_task()) -- the loop still knows who runs
    assert.are.equal("waiting", t:state())
    assert.are.equal("t done", t:await())
    -- the timer heap is consistent: later sleeps work
    local t0 = lunio.now()
    lunio.sleep(0.01)
    assert.is_true(lunio.now() - t0 >= 0.01)
  end))

  it("also refuses tasks parked in park(), await() and a Queue", async(function()
    local q = lunio.Queue()
    local f = lunio.Future()
    local cos = {}
    local tasks = {
      lunio.spawn(function() cos[1] = coroutine.running(); return q:get() end),
      lunio.spawn(function() cos[2] = coroutine.running(); return f:await() end),
    }
    lunio.sleep(0)
    for i = 1, 2 do
      local _, err = coroutine.resume(cos[i], "bogus")
      assert.matches(REFUSED, tostring(err), 1, true)
    end
    q:put("item")
    f:set_result("value")
    assert.are.equal("item", tasks[1]:await())
    assert.are.equal("value", tasks[2]:await())
  end))

  it("refuses a parked coroutine resumed after its loop was collected", function()
    -- In a child: a use-after-free here would crash it (or ASan would).
    local out, err, code = h.lua([[
      local lunio = require "lunio"
      local co
      local loop = lunio.new_loop()
      loop:set_signals(false)
      loop:stop() -- not running yet: no-op
      local main = loop:create_task(function()
        lunio.spawn(function() co = coroutine.running(); lunio.sleep(10) end)
        lunio.sleep(0)
        lunio.get_running_loop():stop()
        lunio.sleep(10)
      end)
      pcall(loop.run, loop, function() main:await() end)
      loop = nil -- collected without close(): the tasks are settled unrun
      collectgarbage(); collectgarbage()
      print(coroutine.resume(co))
      print(main:done(), main:cancelled())
    ]])
    assert.are.equal(0, code, err)
    assert.matches("^true\tinvalid_state: this coroutine is suspended", out)
    assert.matches("\ntrue\ttrue\n", out)
  end)

  it("a closed loop's drained task has a dead coroutine", function()
    local out, err, code = h.lua([[
      local lunio = require "lunio"
      local co
      local loop = lunio.new_loop()
      loop:run(function()
        lunio.spawn(function() co = coroutine.running(); lunio.sleep(10) end)
        lunio.sleep(0)
      end)
      loop:close()
      print(coroutine.status(co))
    ]])
    assert.are.equal(0, code, err)
    assert.matches("^dead", out)
  end)
end)
