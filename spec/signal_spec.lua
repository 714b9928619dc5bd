-- API.md "Running": SIGINT during run cancels the main task; run then raises
-- an error of kind "interrupted". Each case runs lua5.4 in a subprocess that
-- sends itself SIGINT (its pid read from /proc/self/stat) through
-- io.popen("kill -INT pid"): os.execute would not do, as system() ignores
-- SIGINT in the calling process while the command runs.
local h = require "helper"

-- Prelude for the child scripts: lunio, and interrupt() which sends SIGINT
-- to this very process after `delay` seconds, from a task.
local prelude = h.interrupt_prelude .. [[
local function closer(fn) return setmetatable({}, { __close = fn }) end
]]

local function child(body)
  return h.lua(prelude .. body, nil, { timeout = 5 })
end

describe("SIGINT during lunio.run", function()
  it("cancels the main task; run raises kind 'interrupted'; <close> cleanup runs", function()
    local out, err, code = child([[
      local t0 = lunio.now()
      local ok, e = pcall(lunio.run, function()
        local _ <close> = closer(function(_, why)
          lunio.sleep(0.005) -- cleanup may await
          print("cleanup", lunio.is_error(why, "cancelled"))
        end)
        interrupt(0.02)
        lunio.sleep(5)
        print("not reached")
      end)
      print("ok", ok)
      print("interrupted", lunio.is_error(e, "interrupted"))
      print("kind", type(e) == "table" and e.kind)
      print("fast", lunio.now() - t0 < 2)
    ]])
    assert.are.equal(0, code, err)
    assert.matches("cleanup\ttrue", out)
    assert.matches("ok\tfalse", out)
    assert.matches("interrupted\ttrue", out)
    assert.matches("kind\tinterrupted", out)
    assert.matches("fast\ttrue", out)
    assert.is_nil(out:find("not reached", 1, true))
  end)

  it("cancels the task the main task awaits, and the other tasks, with cleanup", function()
    local out, err, code = child([[
      local ok, e = pcall(lunio.run, function()
        local other = lunio.create_task(function()
          local _ <close> = closer(function() print("other cleanup") end)
          lunio.sleep(5)
        end)
        local inner = lunio.create_task(function()
          local _ <close> = closer(function() print("inner cleanup") end)
          lunio.sleep(5)
        end)
        interrupt(0.02)
        inner:await()
      end)
      print("kind", type(e) == "table" and e.kind)
    ]])
    assert.are.equal(0, code, err)
    assert.matches("inner cleanup", out)
    assert.matches("other cleanup", out)
    assert.matches("kind\tinterrupted", out)
  end)

  it("interrupts a main task that keeps the loop busy with sleep(0)", function()
    local out, err, code = child([[
      local t0 = lunio.now()
      local ok, e = pcall(lunio.run, function()
        interrupt(0.02)
        while lunio.now() - t0 < 1.5 do lunio.sleep(0) end
        print("not interrupted")
      end)
      print("kind", type(e) == "table" and e.kind)
      print("fast", lunio.now() - t0 < 1)
    ]])
    assert.are.equal(0, code, err)
    assert.matches("kind\tinterrupted", out)
    assert.matches("fast\ttrue", out)
  end)

  it("uncaught, ends the script with status 1 and 'interrupted' on stderr", function()
    local out, err, code = child([[
      lunio.run(function()
        interrupt(0.02)
        lunio.sleep(5)
      end)
      print("not reached")
    ]])
    assert.are.equal(1, code, err)
    assert.matches("interrupted", err)
    assert.is_nil(out:find("not reached", 1, true))
  end)

  it("leaves the process able to run again, and interrupt again", function()
    local out, err, code = child([[
      for i = 1, 2 do
        local ok, e = pcall(lunio.run, function()
          interrupt(0.01)
          lunio.sleep(5)
        end)
        print("run", i, type(e) == "table" and e.kind)
      end
      print("after", lunio.run(function() lunio.sleep(0.001) return "fine" end))
    ]])
    assert.are.equal(0, code, err)
    assert.matches("run\t1\tinterrupted", out)
    assert.matches("run\t2\tinterrupted", out)
    assert.matches("after\tfine", out)
  end)

  it("does not turn a main task that finishes normally into an interruption", function()
    local out, err, code = child([[
      print("result", lunio.run(function()
        local ok, e = pcall(function()
          interrupt(0.01)
          lunio.sleep(5)
        end)
        -- the main task catches the cancellation and returns a value
        return "caught " .. tostring(lunio.is_error(e, "cancelled"))
      end))
    ]])
    assert.are.equal(0, code, err)
    assert.matches("result\tcaught true", out)
  end)

  it("gives SIGINT back to the interpreter once run has returned", function()
    -- lua.c's own handler raises "interrupted!" in Lua code; run() takes
    -- SIGINT over only while it runs, then restores that handler.
    local out, err, code = child([[
      lunio.run(lunio.sleep, 0.001)
      io.stdout:write("before\n")
      io.stdout:flush()
      local p = io.popen("kill -INT " .. pid())
      p:close()
      local t0 = os.time()
      while os.time() - t0 < 2 do end -- interrupted meanwhile
      print("survived")
    ]])
    assert.matches("before", out)
    assert.is_nil(out:find("survived", 1, true))
    assert.are.equal(1, code)
    assert.matches("interrupted!", err, 1, true)
  end)

  it("interrupts a task busy in Lua code on the second SIGINT", function()
    local out, err, code = child([[
      local function later(delays)
        local cmd = {}
        for _, d in ipairs(delays) do
          cmd[#cmd + 1] = ("sleep %g; kill -INT %s;"):format(d, pid())
        end
        local p = io.popen("(" .. table.concat(cmd, " ") .. ") >/dev/null 2>&1 &")
        p:close()
      end
      local t0 = lunio.now()
      local ok, e = pcall(lunio.run, function()
        later({ 0.1, 0.1 })
        local n = 0
        while lunio.now() - t0 < 3 do n = n + 1 end -- never awaits
        print("not interrupted")
      end)
      print("kind", type(e) == "table" and e.kind)
      print("fast", lunio.now() - t0 < 2)
      -- the loop is usable again, and SIGINT is lua.c's again
      print("again", lunio.run(function() lunio.sleep(0.01) return "ok" end))
    ]])
    assert.are.equal(0, code, err)
    assert.is_nil(out:find("not interrupted", 1, true))
    assert.matches("kind\tinterrupted", out)
    assert.matches("fast\ttrue", out)
    assert.matches("again\tok", out)
  end)

  it("abandons a main task that swallows the first SIGINT, on the second",
    function()
      local out, err, code = child([[
        local t0 = lunio.now()
        local ok, e = pcall(lunio.run, function()
          interrupt(0.02)
          lunio.create_task(function()
            lunio.sleep(0.2)
            local p = io.popen("kill -INT " .. pid())
            p:close()
          end)
          while lunio.now() - t0 < 3 do pcall(lunio.sleep, 5) end -- stubborn
        end)
        print("kind", type(e) == "table" and e.kind)
        print("fast", lunio.now() - t0 < 2)
      ]])
      assert.are.equal(0, code, err)
      assert.matches("kind\tinterrupted", out)
      assert.matches("fast\ttrue", out)
    end)
end)
