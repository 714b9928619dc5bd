-- lunio.signal (API.md "Processes, files, names, signals, threads"):
-- signal.wait and signal.on with real signals sent by kill(1) to this
-- process (or to a child, where a signal's default action would end the
-- test runner). SIGINT under lunio.run is covered in signal_spec.lua for
-- the main task; here, how lunio.signal's watchers see it too.
local lunio = require "lunio"
local signal = require "lunio.signal"
local h = require "helper"

local function async(fn, opts) return h.async(fn, opts) end

local pid, kill = h.pid, h.kill_self -- this process; kill(sig) sends sig

-- Prelude of the child scripts: lunio, signal, kill() to the child itself.
local prelude = 'local lunio = require "lunio"\nlocal signal = lunio.signal\n'
  .. h.kill_self_source .. 'io.stdout:setvbuf("line")\n'

local function child(body, opts)
  return h.lua(prelude .. body, nil, opts or { timeout = 10 })
end

local function active_handles()
  return lunio.get_running_loop():active_handles()
end

describe("lunio.signal", function()
  describe("wait", function()
    it("returns the signal's name at its next delivery", async(function()
      for _, sig in ipairs { "USR1", "USR2", "HUP", "TERM", "WINCH" } do
        local waiter = lunio.create_task(signal.wait, "SIG" .. sig)
        lunio.sleep(0)
        kill(sig)
        assert.are.equal("SIG" .. sig, waiter:await())
      end
    end))

    it("wakes every waiter of the signal, and only those", async(function()
      local a = lunio.create_task(signal.wait, "SIGUSR1")
      local b = lunio.create_task(signal.wait, "SIGUSR1")
      local other = lunio.create_task(signal.wait, "SIGUSR2")
      lunio.sleep(0)
      kill("USR1")
      assert.are.equal("SIGUSR1", a:await())
      assert.are.equal("SIGUSR1", b:await())
      h.settle()
      assert.is_false(other:done())
      other:cancel()
      pcall(other.await, other)
    end))

    it("catches the signal only while someone waits", async(function()
      assert.are.equal(0, active_handles())
      local waiter = lunio.create_task(signal.wait, "SIGUSR1")
      lunio.sleep(0)
      assert.are.equal(1, active_handles())
      assert.are.equal(1, lunio.get_running_loop():open_resources())
      kill("USR1")
      waiter:await()
      assert.are.equal(0, active_handles())
      assert.are.equal(0, lunio.get_running_loop():open_resources())
    end))

    it("keeps the loop alive: a task waiting for a signal is no deadlock", async(function()
      local p = assert(io.popen("(sleep 0.1; kill -USR2 " .. pid() .. ") &"))
      p:close()
      assert.are.equal("SIGUSR2", signal.wait("SIGUSR2"))
    end))

    it("cancelled, it stops watching; the other waiters stay", async(function()
      local a = lunio.create_task(signal.wait, "SIGUSR1")
      local b = lunio.create_task(signal.wait, "SIGUSR1")
      lunio.sleep(0)
      a:cancel()
      assert.is_true(lunio.is_error(h.catch(a.await, a), "cancelled"))
      assert.are.equal(1, active_handles())
      kill("USR1")
      assert.are.equal("SIGUSR1", b:await())
      local c = lunio.create_task(signal.wait, "SIGUSR1")
      lunio.sleep(0)
      c:cancel()
      pcall(c.await, c)
      assert.are.equal(0, active_handles())
    end))

    it("between waits the signal has its default action again", function()
      local out, err, code = child([[
        lunio.run(function()
          lunio.create_task(function() lunio.sleep(0.05) kill("USR1") end)
          print(signal.wait("SIGUSR1"))
          kill("USR1") -- nobody waits: the default action ends the process
          lunio.sleep(2)
          print("survived")
        end)
      ]])
      assert.are.equal("SIGUSR1\n", out, err)
      assert.are.equal(128 + 10, code) -- SIGUSR1 is 10 on Linux
    end)
  end)

  describe("on", function()
    it("runs fn(name) as a new task per delivery; fn may await", async(function()
      local seen = {}
      local handler = signal.on("SIGUSR1", function(name)
        local task = lunio.current_task()
        lunio.sleep(0.001)
        seen[#seen + 1] = { name = name, task = task }
      end)
      assert.matches("^lunio.SignalHandler<SIGUSR1>$", tostring(handler))
      assert.is_true(handler:active())
      kill("USR1")
      while #seen < 1 do lunio.sleep(0.001) end
      kill("USR1")
      while #seen < 2 do lunio.sleep(0.001) end
      assert.are.equal("SIGUSR1", seen[1].name)
      assert.are.equal("SIGUSR1", seen[2].name)
      assert.are_not.equal(seen[1].task, seen[2].task)
      assert.are_not.equal(lunio.current_task(), seen[1].task)
      handler:close()
      assert.is_false(handler:active())
      assert.matches("closed>$", tostring(handler))
      handler:close() -- idempotent
      assert.are.equal(0, active_handles())
    end))

    it("every handler and every waiter sees each delivery", async(function()
      local log = {}
      local h1 = signal.on("SIGHUP", function(n) log[#log + 1] = "h1 " .. n end)
      local h2 = signal.on("SIGHUP", function(n) log[#log + 1] = "h2 " .. n end)
      local waiter = lunio.create_task(signal.wait, "SIGHUP")
      lunio.sleep(0)
      kill("HUP")
      assert.are.equal("SIGHUP", waiter:await())
      while #log < 2 do lunio.sleep(0.001) end
      assert.are.same({ "h1 SIGHUP", "h2 SIGHUP" }, log) -- registration order
      h1:close()
      kill("HUP")
      while #log < 3 do lunio.sleep(0.001) end
      h.settle()
      assert.are.same({ "h1 SIGHUP", "h2 SIGHUP", "h2 SIGHUP" }, log)
      h2:close()
    end))

    it("<close> unregisters; a dropped handler stays registered", async(function()
      local n = 0
      do
        local _ <close> = signal.on("SIGUSR2", function() n = n + 1 end)
        assert.are.equal(1, active_handles())
      end
      assert.are.equal(0, active_handles())
      local kept = signal.on("SIGUSR2", function() n = n + 1 end)
      local weak = setmetatable({ kept }, { __mode = "v" })
      kept = nil -- luacheck: ignore
      collectgarbage()
      collectgarbage()
      assert.is_not_nil(weak[1])
      kill("USR2")
      while n < 1 do lunio.sleep(0.001) end
      weak[1]:close()
    end))

    it("errors in handler tasks go to the exception handler", async(function()
      local reports = h.reports("handler failed")
      local handler = signal.on("SIGUSR1", function() error("handler failed") end)
      kill("USR1")
      for _ = 1, 200 do -- reported once the failed task is collected
        lunio.sleep(0.002)
        collectgarbage()
        if #reports > 0 then break end
      end
      h.restore_handler()
      handler:close()
      assert.are.equal(1, #reports)
      assert.matches("never retrieved", reports[1].message)
    end))

    it("works outside tasks, on the loop that runs next", function()
      local out, err, code = child([[
        local got = {}
        local handler = signal.on("SIGUSR1", function(name) got[#got + 1] = name end)
        lunio.run(function()
          kill("USR1")
          while #got == 0 do lunio.sleep(0.001) end
          handler:close()
          print(got[1], handler:active())
        end)
      ]])
      assert.are.equal(0, code, err)
      assert.are.equal("SIGUSR1\tfalse\n", out)
    end)

    it("is closed when its loop closes", function()
      local loop = h.new_loop()
      local handler = loop:run(function()
        return signal.on("SIGUSR1", function() end)
      end)
      assert.is_true(handler:active())
      assert.are.equal(1, loop:open_resources())
      loop:close()
      assert.is_false(handler:active())
      handler:close()
    end)
  end)

  describe("bad arguments", function()
    it("unknown names, uncatchable and fault signals, callables", async(function()
      local cases = {
        { "#1 to 'wait' %(unknown signal 'SIGFOO'", function() signal.wait("SIGFOO") end },
        { "#1 to 'wait' %(unknown signal 'TERM'", function() signal.wait("TERM") end },
        { "#1 to 'wait' %(string expected, got no value%)", function() signal.wait() end },
        { "#1 to 'wait' %(SIGKILL cannot be caught%)", function() signal.wait("SIGKILL") end },
        { "#1 to 'on' %(SIGSTOP cannot be caught%)",
          function() signal.on("SIGSTOP", print) end },
        { "#1 to 'wait' %(SIGSEGV reports a fault", function() signal.wait("SIGSEGV") end },
        { "#1 to 'wait' %(SIGBUS reports a fault", function() signal.wait("SIGBUS") end },
        { "#1 to 'wait' %(SIGFPE reports a fault", function() signal.wait("SIGFPE") end },
        { "#1 to 'wait' %(SIGILL reports a fault", function() signal.wait("SIGILL") end },
        { "#2 to 'on' %(callable expected, got no value%)", function() signal.on("SIGHUP") end },
        { "#2 to 'on' %(callable expected, got string%)",
          function() signal.on("SIGHUP", "x") end },
      }
      for _, c in ipairs(cases) do
        local ok, err = pcall(c[2])
        assert.is_false(ok)
        assert.matches("bad argument " .. c[1], err)
      end
      assert.are.equal(0, active_handles())
    end))

    it("wait outside a task says so", function()
      local ok, err = pcall(signal.wait, "SIGTERM")
      assert.is_false(ok)
      assert.matches("'wait' called outside a running task", err)
    end)
  end)

  describe("SIGINT", function()
    it("under run(): the main task is cancelled and the watchers see it", function()
      local out, err, code = child([[
        local ok, e = pcall(lunio.run, function()
          signal.on("SIGINT", function(name) print("handler", name) end)
          local waiter = lunio.create_task(signal.wait, "SIGINT")
          lunio.create_task(function() lunio.sleep(0.05) kill("INT") end)
          local slept, why = pcall(lunio.sleep, 5)
          print("main", slept, why.kind)
          lunio.sleep(0.02) -- cleanup that awaits: the others run meanwhile
          print("waiter", waiter:result())
          error(why)
        end)
        print("run", ok, e.kind)
      ]])
      assert.are.equal(0, code, err)
      assert.matches("main\tfalse\tcancelled\n", out)
      assert.matches("handler\tSIGINT\n", out)
      assert.matches("waiter\tSIGINT\n", out)
      assert.matches("run\tfalse\tinterrupted\n", out)
    end)

    it("a handler registered before run() works through run()'s handler", function()
      local out, err, code = child([[
        local seen = 0
        local handler = signal.on("SIGINT", function() seen = seen + 1 end)
        local ok, e = pcall(lunio.run, function()
          kill("INT")
          local _, why = pcall(lunio.sleep, 5)
          while seen == 0 do lunio.sleep(0.001) end
          error(why)
        end)
        handler:close()
        print(seen, ok, e.kind)
        -- run() gave SIGINT back to the interpreter's disposition
        lunio.run(function() lunio.sleep(0) end)
        print("again")
      ]])
      assert.are.equal(0, code, err)
      assert.are.equal("1\tfalse\tinterrupted\nagain\n", out)
    end)

    it("when run() does not hold SIGINT, watching it is the caller's choice", function()
      local out, err, code = child([[
        local loop = lunio.new_loop()
        loop:set_signals(false)
        print(loop:run(function()
          lunio.create_task(function() lunio.sleep(0.05) kill("INT") end)
          return signal.wait("SIGINT")
        end))
        loop:close()
      ]])
      assert.are.equal(0, code, err)
      assert.are.equal("SIGINT\n", out)
    end)
  end)

  it("two loops watch the same signal independently", function()
    local a, b = h.new_loop(), h.new_loop()
    local ha = a:run(function() return signal.on("SIGUSR1", function() end) end)
    b:run(function()
      local waiter = lunio.create_task(signal.wait, "SIGUSR1")
      lunio.sleep(0)
      kill("USR1")
      assert.are.equal("SIGUSR1", waiter:await())
    end)
    ha:close()
    a:close()
    b:close()
  end)
end)
