-- lunio.TaskGroup (lua/lunio/combinators.lua): waiting for children at the
-- end of the block, cancelling siblings and the block when a child fails,
-- and which error comes out in each case.
local lunio = require "lunio"
local core = require "lunio.core"
local async = lunio.testing.async

local VT = { virtual_time = true }

local function fail_after(s, msg)
  return function()
    lunio.sleep(s)
    error(lunio.error("test", msg), 0)
  end
end

local function messages(errors)
  local out = {}
  for i = 1, #errors do
    local e = errors[i]
    out[i] = core.is_error(e) and (e.kind .. ":" .. e.message) or tostring(e)
  end
  return out
end

-- Collects what the loop's exception handler reports ("never retrieved").
local function capture_reports()
  local reports = {}
  lunio.get_running_loop():set_exception_handler(function(ctx)
    reports[#reports + 1] = ctx
  end)
  return reports
end

describe("lunio.TaskGroup", function()
  it("waits for every child when the block exits", async(function()
    local done, t0 = {}, lunio.now()
    local a, b
    do
      local tg <close> = lunio.TaskGroup()
      a = tg:spawn(function(x) lunio.sleep(1); done[#done + 1] = x; return x end, "a")
      b = tg:spawn(function() lunio.sleep(2); done[#done + 1] = "b" end)
      assert.equal(2, tg:pending())
    end
    assert.same({ "a", "b" }, done)
    assert.equal("a", a:result())
    assert.is_true(b:done())
    assert.near(2, lunio.now() - t0, 0.01)
  end, VT))

  it("an empty group exits at once", async(function()
    local _ <close> = lunio.TaskGroup()
  end))

  it("a failing child cancels its siblings and the block; raises task_group",
    async(function()
      local reports = capture_reports()
      local sibling_cancelled, block_cancelled = false, false
      local ok, err = lunio.pcall(function()
        local tg <close> = lunio.TaskGroup()
        tg:spawn(fail_after(1, "child"))
        tg:spawn(function()
          local ok2, e = pcall(lunio.sleep, 10)
          sibling_cancelled = not ok2 and lunio.is_error(e, "cancelled")
          error(e, 0)
        end)
        local ok3, e = pcall(lunio.sleep, 10)
        block_cancelled = not ok3 and lunio.is_error(e, "cancelled")
        error(e, 0)
      end)
      assert.is_false(ok)
      assert.is_true(lunio.is_error(err, "task_group"))
      assert.same({ "test:child" }, messages(err.errors))
      assert.is_true(sibling_cancelled)
      assert.is_true(block_cancelled)
      collectgarbage()
      assert.same({}, reports)
    end, VT))

  it("collects every child error, not the cancellations it caused",
    async(function()
      local ok, err = lunio.pcall(function()
        local tg <close> = lunio.TaskGroup()
        tg:spawn(fail_after(1, "one"))
        tg:spawn(function() -- fails while being cancelled
          pcall(lunio.sleep, 10)
          error(lunio.error("test", "two"), 0)
        end)
        tg:spawn(lunio.sleep, 10) -- just cancelled
      end)
      assert.is_false(ok)
      assert.same({ "test:one", "test:two" }, messages(err.errors))
    end, VT))

  it("when only the block fails, its error propagates unchanged after the "
    .. "children are cancelled and done", async(function()
      local boom = lunio.error("boom", "block failed")
      local child
      local ok, err = lunio.pcall(function()
        local tg <close> = lunio.TaskGroup()
        child = tg:spawn(function()
          local _, e = pcall(lunio.sleep, 10)
          lunio.sleep(1) -- slow cleanup
          error(e, 0)
        end)
        lunio.sleep(0.5)
        error(boom)
      end)
      assert.is_false(ok)
      assert.equal(boom, err)
      assert.is_true(child:cancelled())
    end, VT))

  it("block and child both fail: the child errors, then the block's", async(function()
    local ok, err = lunio.pcall(function()
      local tg <close> = lunio.TaskGroup()
      tg:spawn(function()
        pcall(lunio.sleep, 10)
        error(lunio.error("test", "child"), 0)
      end)
      lunio.sleep(0)
      error(lunio.error("test", "block"), 0)
    end)
    assert.is_false(ok)
    assert.is_true(lunio.is_error(err, "task_group"))
    assert.same({ "test:child", "test:block" }, messages(err.errors))
  end))

  it("a cancellation from outside cancels the children and propagates",
    async(function()
      local children = {}
      local t = lunio.spawn(function()
        local tg <close> = lunio.TaskGroup()
        children[1] = tg:spawn(lunio.sleep, 10)
        children[2] = tg:spawn(lunio.sleep, 10)
        lunio.sleep(10)
      end)
      lunio.sleep(1)
      t:cancel("stop")
      local ok, err = pcall(t.await, t)
      assert.is_false(ok)
      assert.equal("stop", err.message)
      assert.is_true(children[1]:cancelled())
      assert.is_true(children[2]:cancelled())
    end, VT))

  it("a cancellation while the group waits at the exit cancels the children",
    async(function()
      local child
      local t = lunio.spawn(function()
        local tg <close> = lunio.TaskGroup()
        child = tg:spawn(lunio.sleep, 10)
      end)
      lunio.sleep(1) -- t waits in the group's exit
      t:cancel("stop")
      local ok, err = pcall(t.await, t)
      assert.is_false(ok)
      assert.equal("stop", err.message)
      assert.is_true(child:cancelled())
    end, VT))

  it("tg:wait() waits explicitly and closes the group", async(function()
    local tg <close> = lunio.TaskGroup()
    local t = tg:spawn(function() lunio.sleep(1); return 1 end)
    tg:wait()
    assert.equal(1, t:result())
    local ok, err = pcall(tg.spawn, tg, lunio.sleep, 0)
    assert.is_false(ok)
    assert.is_true(lunio.is_error(err, "invalid_state"))
  end, VT))

  it("tg:wait() raises task_group when a child failed", async(function()
    local tg <close> = lunio.TaskGroup()
    tg:spawn(fail_after(0.1, "x"))
    local ok, err = pcall(tg.wait, tg)
    assert.is_false(ok)
    assert.is_true(lunio.is_error(err, "task_group"))
  end, VT))

  it("refuses new children while shutting down", async(function()
    local refused
    local ok = pcall(function()
      local tg <close> = lunio.TaskGroup()
      tg:spawn(fail_after(0.1, "x"))
      pcall(lunio.sleep, 1) -- cancelled by the failure
      local ok2, e = pcall(tg.spawn, tg, lunio.sleep, 0)
      refused = not ok2 and e.kind
    end)
    assert.is_false(ok)
    assert.equal("invalid_state", refused)
  end, VT))

  it("children may spawn siblings", async(function()
    local n = 0
    do
      local tg <close> = lunio.TaskGroup()
      local function grow(depth)
        n = n + 1
        if depth < 5 then
          tg:spawn(grow, depth + 1)
          tg:spawn(grow, depth + 1)
        end
        lunio.sleep(0.1)
      end
      tg:spawn(grow, 1)
    end
    assert.equal(31, n)
  end, VT))

  it("nested groups: an inner failure surfaces as task_group in the outer",
    async(function()
      local ok, err = lunio.pcall(function()
        local outer <close> = lunio.TaskGroup()
        outer:spawn(lunio.sleep, 10)
        outer:spawn(function()
          local inner <close> = lunio.TaskGroup()
          inner:spawn(fail_after(0.5, "deep"))
          lunio.sleep(10)
        end)
      end)
      assert.is_false(ok)
      assert.is_true(lunio.is_error(err, "task_group"))
      assert.equal(1, #err.errors)
      local inner = err.errors[1]
      assert.is_true(lunio.is_error(inner, "task_group"))
      assert.same({ "test:deep" }, messages(inner.errors))
    end, VT))

  it("inside a timeout scope, the deadline cancels block and children and "
    .. "comes out as timeout", async(function()
      local child
      local ok, err = lunio.pcall(function()
        local _ <close> = lunio.timeout(1)
        local tg <close> = lunio.TaskGroup()
        child = tg:spawn(lunio.sleep, 10)
        lunio.sleep(10)
      end)
      assert.is_false(ok)
      assert.is_true(lunio.is_error(err, "timeout"))
      assert.is_true(child:cancelled())
    end, VT))

  it("a child failing after the block ended cancels nobody else's task",
    async(function()
      local ok, err = lunio.pcall(function()
        local tg <close> = lunio.TaskGroup()
        tg:spawn(fail_after(1, "late"))
        tg:spawn(lunio.sleep, 5)
      end) -- the block is already in the exit: only children are cancelled
      assert.is_false(ok)
      assert.same({ "test:late" }, messages(err.errors))
      lunio.sleep(0) -- no stray cancellation of this task
    end, VT))

  it("spawn checks its argument", async(function()
    local tg <close> = lunio.TaskGroup()
    assert.has_error(function() tg:spawn(42) end,
      "bad argument #1 to 'spawn' (callable expected, got number)")
  end))
end)

describe("lunio.TaskGroup outside a task", function()
  it("raises an error saying so", function()
    local ok, err = pcall(lunio.TaskGroup)
    assert.is_false(ok)
    assert.matches("outside a running task", err)
  end)
end)

describe("a task_group error prints", function()
  -- Lines of this file where the children below raise.
  local SRC = debug.getinfo(1, "S").short_src

  it("a header and every child error, indented, each with its own traceback",
    async(function()
      local line = debug.getinfo(1, "l").currentline
      local ok, err = pcall(function()
        local tg <close> = lunio.TaskGroup()
        tg:spawn(function() lunio.sleep(1); error("string boom") end)
        tg:spawn(function() lunio.sleep(1); error(lunio.error("test", "lunio boom")) end)
        tg:spawn(function() lunio.sleep(1); error({ kind = "mine", message = "table boom" }) end)
      end)
      assert.is_false(ok)
      assert.equal(3, #err.errors)
      local text = err.message
      -- split into the header and one block per error
      local header, rest = text:match("^([^\n]*)\n(.*)$")
      assert.equal("3 error(s) in the task group", header)
      local blocks, body = {}, "\n" .. rest
      for i = 1, 3 do
        local s = body:find("\n  [" .. i .. "] ", 1, true)
        local e = body:find("\n  [" .. (i + 1) .. "] ", 1, true)
        assert.is_truthy(s, text)
        blocks[i] = body:sub(s, (e or #body + 1) - 1)
      end
      assert.is_nil(body:find("\n  [4] ", 1, true))
      local heads = {
        ("%s:%d: string boom"):format(SRC, line + 3),
        "test: lunio boom",
        "mine: table boom", -- a plain table with kind/message, not "table: 0x..."
      }
      for i, b in ipairs(blocks) do
        local head, tb = b:match("^\n  %[" .. i .. "%] ([^\n]*)\n(.*)$")
        assert.equal(heads[i], head)
        -- its own traceback, indented under it, naming the child's line
        assert.equal("      stack traceback:\n", tb:sub(1, 23))
        assert.is_truthy(tb:find(("\n      \t%s:%d: in function"):format(SRC, line + 2 + i),
          1, true), tb)
        for l in tb:gmatch("[^\n]+") do assert.equal("      ", l:sub(1, 6)) end
      end
      -- the group's own traceback is the block's, not combinators.lua's
      assert.is_nil(tostring(err):find("combinators.lua", 1, true), tostring(err))
      assert.equal("task_group: " .. text, tostring(err):sub(1, #text + 12))
    end, VT))

  it("nested groups as an indented error inside the outer listing", async(function()
    local ok, err = pcall(function()
      local tg <close> = lunio.TaskGroup()
      tg:spawn(function()
        local inner <close> = lunio.TaskGroup()
        inner:spawn(fail_after(1, "deep"))
        lunio.sleep(5)
      end)
    end)
    assert.is_false(ok)
    assert.is_true(lunio.is_error(err.errors[1], "task_group"))
    assert.matches("^1 error%(s%) in the task group\n  %[1%] task_group: 1 error%(s%) in "
      .. "the task group\n        %[1%] test: deep\n", err.message)
  end, VT))

  it("when closed by tg:wait(), the traceback of the caller", async(function()
    local tg = lunio.TaskGroup()
    tg:spawn(fail_after(0, "x"))
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, err = pcall(tg.wait, tg)
    assert.is_false(ok)
    assert.matches("^stack traceback:\n\t[^\n]*" .. SRC:gsub("%p", "%%%0") .. ":" .. line
      .. ": in ", err.traceback)
  end))
end)
