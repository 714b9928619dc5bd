-- lunio.subprocess (API.md "Processes, files, names, signals, threads" and
-- the subprocess rows of "Precise semantics"): real children (sh, cat,
-- yes | head, sleep, true, false), every option and error kind, every
-- bad argument, cancellation in each suspending call (wait, communicate,
-- run, a pipe's read), no zombie left (/proc/<pid>), and no descriptor,
-- handle or pipe left open (lunio.testing.async checks /proc/self/fd, the
-- loop's active handles and its open streams after each test).
local lunio = require "lunio"
local core = require "lunio.core"
local sp = require "lunio.subprocess"
local h = require "helper"

local scale = h.time_scale
local function async(fn, opts) return h.async(fn, opts) end

-- The state letter of process pid ("S", "R", "Z" ...), nil once reaped.
local function proc_state(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s:match("^%d+ %b() (%a)")
end

local kind_of = h.kind_and_error

-- The message of a bad argument error raised by fn(...), checking that it
-- points at the caller's line (this file), not into lunio.
local function bad_arg(fn, ...)
  local ok, err = pcall(function(...)
    local r = fn(...) -- not a tail call: this frame is the caller
    return r
  end, ...)
  assert(not ok, "expected an error")
  assert.is_string(err)
  assert.matches("^[^:]*subprocess_spec%.lua:%d+: bad argument #%d", err)
  return (err:gsub("^[^:]+:%d+: ", ""))
end

local eventually = h.eventually

-- A child that ignores SIGTERM (only SIGKILL ends it), ready once it
-- printed "ready".
local STUBBORN = { "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done" }

describe("lunio.subprocess", function()
  it("is lunio.subprocess, loaded lazily", function()
    assert.equal(sp, lunio.subprocess)
    assert.is_function(sp.exec)
    assert.is_function(sp.run)
  end)

  describe("exec", function()
    it("starts argv[1] with the arguments (no shell), piped stdio are Streams",
      async(function()
        local p <close> = sp.exec({ "sh", "-c", 'echo "$0|$1|$2"', "a b", "$HOME", "*" },
          { stdout = "pipe" })
        assert.is_number(p.pid)
        assert.is_nil(p.stdin)
        assert.is_nil(p.stderr)
        assert.matches("^lunio%.Stream<", tostring(p.stdout))
        assert.equal("a b|$HOME|*", p.stdout:read_line())
        assert.is_nil(p.stdout:read_line())
        assert.same({ 0, nil }, { p:wait() })
        assert.same({ "sh", "-c", 'echo "$0|$1|$2"', "a b", "$HOME", "*" }, p.argv)
      end))

    it("pipes are the Stream type of sockets: lines(), read_line, write, drain",
      async(function()
        local server <close> = lunio.start_server(function() end, "127.0.0.1", 0)
        local conn <close> = lunio.open_connection("127.0.0.1", server.port)
        local p <close> = sp.exec({ "cat" }, { stdin = "pipe", stdout = "pipe" })
        assert.equal(getmetatable(conn), getmetatable(p.stdin))
        assert.equal(getmetatable(conn), getmetatable(p.stdout))
        local writer = lunio.spawn(function()
          for i = 1, 3 do p.stdin:write(("line %d\r\n"):format(i)) end
          p.stdin:drain()
          p.stdin:close()
        end)
        local got = {}
        for line in p.stdout:lines() do got[#got + 1] = line end
        writer:await()
        assert.same({ "line 1", "line 2", "line 3" }, got)
        assert.equal(0, (p:wait()))
        conn:close()
        server:close()
      end))

    it("numbers in argv are converted", async(function()
      local r = sp.run({ "sh", "-c", "echo $0 $1", 42, 1.5 })
      assert.equal("42 1.5\n", r.stdout)
    end))

    it("stdio defaults to inherit: the child has our descriptors", async(function()
      local p <close> = sp.exec({ "sleep", "10" })
      assert.is_nil(p.stdin)
      assert.is_nil(p.stdout)
      assert.is_nil(p.stderr)
      local me = assert(io.open("/proc/self/stat")):read("n")
      for fd = 0, 2 do
        local r = sp.run({ "readlink", ("/proc/%d/fd/%d"):format(me, fd),
          ("/proc/%d/fd/%d"):format(p.pid, fd) })
        local a, b = r.stdout:match("^([^\n]*)\n([^\n]*)\n$")
        assert.is_truthy(a, r.stdout .. r.stderr)
        assert.equal(a, b)
      end
    end))

    it('"null" connects the stream to /dev/null', async(function()
      local p <close> = sp.exec({ "sleep", "10" }, { stdin = "null", stdout = "null" })
      local fd = "/proc/" .. p.pid .. "/fd/"
      local r = sp.run({ "readlink", fd .. "0", fd .. "1" })
      assert.equal("/dev/null\n/dev/null\n", r.stdout)
      r = sp.run({ "cat" }, { stdin = "null" }) -- reads EOF at once
      assert.same({ code = 0, stdout = "", stderr = "" }, r)
    end))

    it("cwd sets the working directory", async(function()
      local r = sp.run({ "pwd" }, { cwd = "/tmp" })
      assert.equal("/tmp\n", r.stdout)
    end))

    it("env replaces the environment; environ() extends ours", async(function()
      local r = sp.run({ "/usr/bin/env" }, { env = { B = "two words", A = 1, C = "" } })
      assert.equal("A=1\nB=two words\nC=\n", r.stdout)
      local env = sp.environ()
      assert.equal(os.getenv("PATH"), env.PATH)
      env.LUNIO_SPEC_VAR = "yes"
      r = sp.run({ "sh", "-c", 'echo "$LUNIO_SPEC_VAR:$PATH"' }, { env = env })
      assert.equal("yes:" .. os.getenv("PATH") .. "\n", r.stdout)
      assert.is_nil(os.getenv("LUNIO_SPEC_VAR")) -- ours is untouched
    end))

    it("a missing program raises kind enoent with .path, leaving nothing behind",
      async(function()
        local loop = lunio.get_running_loop()
        sp.run({ "true" }) -- the loop's first child opens its SIGCHLD watcher
        local fds, res = core.open_fds(), loop:open_resources()
        for _, stdio in ipairs { "pipe", "inherit", "null" } do
          local kind, err = kind_of(sp.exec, { "lunio-no-such-program", "x" },
            { stdin = stdio, stdout = "pipe", stderr = stdio })
          assert.equal("enoent", kind)
          assert.equal("lunio-no-such-program", err.path)
          assert.same({ "lunio-no-such-program", "x" }, err.argv)
          assert.matches("cannot run 'lunio%-no%-such%-program'", err.message)
        end
        kind_of(sp.run, { "/nonexistent/prog" })
        lunio.sleep(0) -- the close callbacks of the handles
        assert.equal(fds, core.open_fds())
        assert.equal(res, loop:open_resources())
        assert.equal(0, core.stream.open_count(loop))
        assert.equal(0, loop:active_handles())
      end))

    it("a program that cannot be executed raises kind eacces", async(function()
      local file = os.tmpname() -- mode 0600: not executable, even for root
      local kind, err = kind_of(sp.exec, { file })
      os.remove(file)
      assert.equal("eacces", kind)
      assert.equal(file, err.path)
    end))

    it("a missing cwd raises kind enoent with .path the directory", async(function()
      local kind, err = kind_of(sp.run, { "true" }, { cwd = "/nonexistent/dir" })
      assert.equal("enoent", kind)
      assert.equal("/nonexistent/dir", err.path)
      assert.matches("cannot change to directory", err.message)
    end))

    it("tostring shows the pid and the state", async(function()
      local p <close> = sp.exec({ "sh", "-c", "exit 3" })
      assert.equal(("lunio.Process<pid %d, running>"):format(p.pid), tostring(p))
      p:wait()
      assert.equal(("lunio.Process<pid %d, exited 3>"):format(p.pid), tostring(p))
    end))
  end)

  describe("wait, poll and kill", function()
    it("wait returns the exit code and nil", async(function()
      for _, code in ipairs { 0, 1, 7, 255 } do
        local p <close> = sp.exec({ "sh", "-c", "exit " .. code })
        assert.same({ code, nil }, { p:wait() })
        assert.same({ code, nil }, { p:wait() }) -- again: at once
      end
    end))

    it("wait returns nil and the name of the signal that ended the child",
      async(function()
        local p <close> = sp.exec({ "sh", "-c", "kill -USR1 $$" })
        assert.same({ nil, "SIGUSR1" }, { p:wait() })
      end))

    it("several tasks may wait for the same child", async(function()
      local p <close> = sp.exec({ "sh", "-c", "sleep 0.05; exit 5" })
      local a = lunio.spawn(p.wait, p)
      local b = lunio.spawn(p.wait, p)
      assert.equal(5, (p:wait()))
      assert.equal(5, (a:await()))
      assert.equal(5, (b:await()))
    end))

    it("poll returns nothing while the child runs", async(function()
      local p <close> = sp.exec({ "sh", "-c", "exit 2" })
      assert.equal(0, select("#", p:poll()))
      p:wait()
      assert.same({ 2, nil }, { p:poll() })
    end))

    it("kill sends SIGTERM by default, names and numbers otherwise", async(function()
      local cases = { { nil, "SIGTERM" }, { "SIGKILL", "SIGKILL" }, { "SIGINT", "SIGINT" },
        { 9, "SIGKILL" }, { "SIGUSR2", "SIGUSR2" } }
      for _, c in ipairs(cases) do
        local p <close> = sp.exec({ "sleep", "10" })
        assert.is_true(p:kill(c[1]))
        assert.same({ nil, c[2] }, { p:wait() })
        assert.is_false(p:kill()) -- exited: nothing is sent
        assert.is_nil(proc_state(p.pid))
      end
    end))

    it("writing to the stdin of a child that exited raises kind epipe", async(function()
      local p <close> = sp.exec({ "true" }, { stdin = "pipe" })
      p:wait()
      local kind = kind_of(function()
        for _ = 1, 100 do p.stdin:write(("z"):rep(65536)) end
      end)
      assert.is_true(kind == "epipe" or kind == "econnreset", kind)
    end))

    it("kill 0 checks that the child is there", async(function()
      local p <close> = sp.exec({ "sleep", "10" })
      assert.is_true(p:kill(0))
      p:kill("SIGKILL")
      p:wait()
    end))
  end)

  describe("communicate", function()
    it("writes the input, closes stdin, reads both outputs, waits", async(function()
      local p <close> = sp.exec({ "sh", "-c", "cat; echo to-err >&2; exit 3" },
        { stdin = "pipe", stdout = "pipe", stderr = "pipe" })
      assert.same({ "hello\n", "to-err\n", 3, nil }, { p:communicate("hello\n") })
      assert.is_true(p.stdin:closed())
      assert.is_true(p.stdout:closed())
      assert.is_true(p.stderr:closed())
    end))

    it("without input, stdin is closed at once (the child sees EOF)", async(function()
      local p <close> = sp.exec({ "cat" }, { stdin = "pipe", stdout = "pipe" })
      assert.same({ "", nil, 0, nil }, { p:communicate() })
    end))

    it("outputs that are not piped come back as nil", async(function()
      local p <close> = sp.exec({ "sh", "-c", "kill -TERM $$" })
      assert.same({ nil, nil, nil, "SIGTERM" }, { p:communicate() })
    end))

    it("returns only after the exit and the end of every pipe (luv#499)",
      async(function()
        -- the child exits at once; a grandchild still writes to its pipes
        local p <close> = sp.exec({ "sh", "-c",
          "(sleep 0.2; echo late; echo late-err >&2) & exit 0" },
          { stdout = "pipe", stderr = "pipe" })
        local out, err, code = p:communicate()
        assert.equal("late\n", out)
        assert.equal("late-err\n", err)
        assert.equal(0, code)
      end))

    it("a child that fills stderr before it reads stdin does not deadlock",
      async(function()
        local input = ("x"):rep(4 << 20)
        local p <close> = sp.exec({ "sh", "-c", "head -c 4194304 /dev/zero >&2; cat" },
          { stdin = "pipe", stdout = "pipe", stderr = "pipe" })
        local out, err, code = p:communicate(input)
        assert.equal(0, code)
        assert.equal(#input, #out)
        assert.equal(input, out)
        assert.equal(4 << 20, #err)
      end, { timeout = 5 }))

    it("a child that exits without reading its input is no error", async(function()
      local p <close> = sp.exec({ "sh", "-c", "exec 0<&-; echo bye" },
        { stdin = "pipe", stdout = "pipe" })
      local out, _, code = p:communicate(("y"):rep(1 << 20))
      assert.equal("bye\n", out)
      assert.equal(0, code)
    end))

    it("once per process; needs stdin piped for input", async(function()
      local p <close> = sp.exec({ "true" }, { stdout = "pipe" })
      assert.equal(("bad argument #1 to 'communicate' (input given but stdin is not "
        .. 'a pipe (exec with opts.stdin = "pipe"))'), bad_arg(p.communicate, p, "x"))
      p:communicate()
      assert.equal("invalid_state", (kind_of(p.communicate, p)))
      p:close()
      assert.equal("closed", (kind_of(p.communicate, p)))
    end))
  end)

  describe("run", function()
    it("captures stdout and stderr", async(function()
      local r = sp.run({ "sh", "-c", "echo out; echo err >&2; exit 4" })
      assert.same({ code = 4, stdout = "out\n", stderr = "err\n" }, r)
    end))

    it("writes opts.input", async(function()
      local r = sp.run({ "cat" }, { input = "some input" })
      assert.same({ code = 0, stdout = "some input", stderr = "" }, r)
    end))

    it("outputs sent elsewhere are nil", async(function()
      local r = sp.run({ "sh", "-c", "echo x; echo y >&2" },
        { stdout = "null", stderr = "null" })
      assert.same({ code = 0 }, r)
    end))

    it("reports the signal that ended the child", async(function()
      local r = sp.run({ "sh", "-c", "kill -KILL $$" })
      assert.same({ signal = "SIGKILL", stdout = "", stderr = "" }, r)
    end))

    it("opts.check raises kind process_failed unless the code is 0", async(function()
      assert.equal(0, sp.run({ "true" }, { check = true }).code)
      local kind, err = kind_of(sp.run, { "sh", "-c", "echo o; echo e >&2; exit 3" },
        { check = true })
      assert.equal("process_failed", kind)
      assert.equal(3, err.code)
      assert.is_nil(err.signal)
      assert.equal("o\n", err.stdout)
      assert.equal("e\n", err.stderr)
      assert.same({ "sh", "-c", "echo o; echo e >&2; exit 3" }, err.argv)
      assert.matches("command 'sh %-c \"echo o; echo e >&2; exit 3\"' exited with code 3",
        err.message)
      kind, err = kind_of(sp.run, { "sh", "-c", "kill $$" }, { check = true })
      assert.equal("process_failed", kind)
      assert.equal("SIGTERM", err.signal)
      assert.matches("was killed by SIGTERM", err.message)
      assert.equal(1, sp.run({ "false" }).code) -- no check: no error
    end))

    it("opts.timeout stops the child, reaps it, raises kind timeout", async(function()
      local t0 = lunio.now()
      local kind, err = kind_of(sp.run, { "sh", "-c", "echo partial; echo e >&2; exec sleep 10" },
        { timeout = 0.2 })
      local took = lunio.now() - t0
      assert.equal("timeout", kind)
      assert.is_true(took >= 0.2 and took < 1 * scale, took)
      assert.equal("partial\n", err.stdout)
      assert.equal("e\n", err.stderr)
      assert.equal(0.2, err.timeout)
      assert.matches("command 'sh %-c .*' timed out after 0%.2 s", err.message)
    end))

    it("opts.timeout = 0 stops the child at once", async(function()
      assert.equal("timeout", (kind_of(sp.run, { "sleep", "10" }, { timeout = 0 })))
    end))

    it("a child that ignores SIGTERM gets SIGKILL after kill_grace", async(function()
      local t0 = lunio.now()
      local kind = kind_of(sp.run, STUBBORN, { timeout = 0.2, kill_grace = 0.2 })
      local took = lunio.now() - t0
      assert.equal("timeout", kind)
      assert.is_true(took >= 0.39 and took < 1.5 * scale, took)
    end, { timeout = 3 }))

    it("100 MiB of output through a pipe", async(function()
      local n = 100 << 20
      local r = sp.run({ "sh", "-c", "yes | head -c " .. n })
      assert.equal(0, r.code)
      assert.equal(n, #r.stdout)
      assert.equal("y\ny\n", r.stdout:sub(1, 4))
      assert.equal("y\ny\n", r.stdout:sub(-4))
      assert.is_nil(r.stdout:find("[^y\n]"))
    end, { timeout = 30 }))

    it("cat echoes 16 MiB of input while it is written (no deadlock)", async(function()
      local input = ("0123456789abcdef"):rep(1 << 20)
      local r = sp.run({ "cat" }, { input = input })
      assert.equal(#input, #r.stdout)
      assert.is_true(r.stdout == input)
    end, { timeout = 10 }))

    it("works under virtual time: the clock does not jump while a child runs",
      async(function()
        local t0 = lunio.now()
        local r = sp.run({ "sh", "-c", "sleep 0.2; echo done" }, { timeout = 100 })
        assert.equal("done\n", r.stdout)
        assert.is_true(lunio.now() - t0 < 50)
      end, { virtual_time = true }))
  end)

  describe("cancellation", function()
    -- Starts `argv`, runs `call(p)` in a task, cancels the task once the
    -- child runs (for STUBBORN: once it said "ready"), and returns the
    -- process, the task's error and the time the cancellation took.
    local function cancel_inside(argv, opts, call)
      local p = sp.exec(argv, opts)
      local task = lunio.spawn(call, p)
      lunio.sleep(0.05 * scale)
      local t0 = lunio.now()
      task:cancel()
      local ok, err = pcall(task.await, task)
      assert.is_false(ok)
      return p, err, lunio.now() - t0
    end

    it("in wait: SIGTERM, reaped before the cancellation propagates", async(function()
      local p, err = cancel_inside({ "sleep", "10" }, nil, function(p) return p:wait() end)
      assert.is_true(lunio.is_cancelled(err))
      assert.same({ nil, "SIGTERM" }, { p:poll() })
      assert.is_nil(proc_state(p.pid))
      p:close()
    end))

    it("in wait: SIGKILL after kill_grace when SIGTERM is ignored", async(function()
      local p, err, took = cancel_inside(STUBBORN, { stdout = "null", kill_grace = 0.2 },
        function(p) return p:wait() end)
      assert.is_true(lunio.is_cancelled(err))
      assert.same({ nil, "SIGKILL" }, { p:poll() })
      -- (libuv's timer counts whole milliseconds from its cached time)
      assert.is_true(took >= 0.19 and took < 1 * scale, took)
      assert.is_nil(proc_state(p.pid))
      p:close()
    end, { timeout = 3 }))

    it("in wait: a second cancellation during the grace period kills at once",
      async(function()
        local p = sp.exec(STUBBORN, { stdout = "null", kill_grace = 10 })
        local task = lunio.spawn(function() return p:wait() end)
        lunio.sleep(0.05 * scale)
        local t0 = lunio.now()
        task:cancel("first")
        lunio.sleep(0.1)
        assert.is_false(task:done()) -- waiting out the grace period
        task:cancel("second")
        local ok, err = pcall(task.await, task)
        assert.is_false(ok)
        assert.equal("first", err.message) -- the first one is raised
        assert.is_true(lunio.now() - t0 < 1 * scale)
        assert.same({ nil, "SIGKILL" }, { p:poll() })
        p:close()
      end))

    it("in communicate: the child is stopped and the pipes closed", async(function()
      local p, err = cancel_inside({ "sh", "-c", "echo x; exec sleep 10" },
        { stdin = "pipe", stdout = "pipe", stderr = "pipe" },
        function(p) return p:communicate("input") end)
      assert.is_true(lunio.is_cancelled(err))
      assert.same({ nil, "SIGTERM" }, { p:poll() })
      assert.is_true(p.stdout:closed() and p.stderr:closed() and p.stdin:closed())
      assert.is_nil(proc_state(p.pid))
      p:close()
    end))

    it("in run: the child is stopped and reaped", async(function()
      -- the child tells its pid through a file (run captures its stdout)
      local file = os.tmpname()
      local task = lunio.spawn(function()
        return sp.run({ "sh", "-c", 'echo $$ >"$0.tmp"; mv "$0.tmp" "$0"; exec sleep 10',
          file })
      end)
      os.remove(file)
      local pid
      eventually(function()
        local f = io.open(file)
        pid = f and f:read("n")
        if f then f:close() end
        return pid ~= nil
      end, "the child's pid")
      os.remove(file)
      task:cancel()
      assert.is_true(lunio.is_cancelled(select(2, pcall(task.await, task))))
      assert.is_nil(proc_state(pid))
    end))

    it("a timeout scope around run raises timeout, child reaped", async(function()
      local ok, err = pcall(function()
        local _ <close> = lunio.timeout(0.1)
        return sp.run({ "sleep", "10" })
      end)
      assert.is_false(ok)
      assert.is_true(lunio.is_error(err, "timeout"))
    end))

    it("wait_for around wait raises timeout, child reaped", async(function()
      local p <close> = sp.exec({ "sleep", "10" })
      assert.equal("timeout", (kind_of(lunio.wait_for, function() return p:wait() end, 0.1)))
      assert.same({ nil, "SIGTERM" }, { p:poll() })
      assert.is_nil(proc_state(p.pid))
    end))

    it("in a read of stdout: the read is cancelled, the data and child stay",
      async(function()
        local p <close> = sp.exec({ "sh", "-c", "read x; echo got $x" },
          { stdin = "pipe", stdout = "pipe" })
        local reader = lunio.spawn(function() return p.stdout:read_line() end)
        lunio.sleep(0.05)
        reader:cancel()
        assert.is_true(lunio.is_cancelled(select(2, pcall(reader.await, reader))))
        assert.equal(0, select("#", p:poll())) -- still running
        p.stdin:write("it\n")
        assert.equal("got it", p.stdout:read_line())
        assert.equal(0, (p:wait()))
      end))
  end)

  describe("closing", function()
    it("<close> in a task stops a running child and reaps it", async(function()
      local pid
      do
        local p <close> = sp.exec({ "sleep", "10" }, { stdout = "pipe" })
        pid = p.pid
      end
      assert.is_nil(proc_state(pid))
    end))

    it("<close> while an error unwinds still stops and reaps", async(function()
      local pid
      local ok, err = pcall(function()
        local p <close> = sp.exec(STUBBORN, { stdout = "pipe", kill_grace = 0.05 })
        pid = p.pid
        assert.equal("ready", p.stdout:read_line())
        error("boom")
      end)
      assert.is_false(ok)
      assert.matches("boom", err)
      assert.is_nil(proc_state(pid))
    end))

    it("close() outside a task: SIGKILL, reaped at once", function()
      local p = sp.exec({ "sleep", "10" }) -- the default loop's
      assert.is_truthy(proc_state(p.pid))
      p:close()
      assert.same({ nil, "SIGKILL" }, { p:poll() })
      assert.is_nil(proc_state(p.pid))
      p:close() -- idempotent
    end)

    it("a collected Process does not kill its child; the loop reaps it", async(function()
      local pid = sp.exec({ "sleep", "0.1" }).pid
      collectgarbage()
      collectgarbage()
      assert.is_truthy(proc_state(pid))
      eventually(function() return proc_state(pid) == nil end, "the child reaped")
    end))

    it("the loop closing kills and reaps a child nobody waits for", function()
      local fds = core.open_fds()
      local loop = h.new_loop()
      local p = loop:run(function()
        return sp.exec({ "sleep", "10" }, { stdin = "pipe", stdout = "pipe" })
      end)
      assert.equal(0, select("#", p:poll()))
      assert.is_true(core.open_fds() > fds)
      loop:close()
      assert.same({ nil, "SIGKILL" }, { p:poll() })
      assert.is_nil(proc_state(p.pid))
      assert.is_true(p.stdout:closed() and p.stdin:closed())
      assert.equal(fds, core.open_fds()) -- pipes and the loop's descriptors
    end)

    it("tasks still waiting when run ends are cancelled: SIGTERM, reaped",
      function()
        local loop = h.new_loop()
        local p, task
        loop:run(function()
          p = sp.exec({ "sleep", "10" })
          task = lunio.spawn(p.wait, p)
          lunio.sleep(0.01)
        end)
        assert.is_true(task:cancelled())
        assert.same({ nil, "SIGTERM" }, { p:poll() })
        assert.is_nil(proc_state(p.pid))
        loop:close()
      end)

    it("a loop collected without close() kills and reaps its children", function()
      local pid
      do
        local loop = lunio.new_loop()
        local ok, err = pcall(loop.run, loop, function()
          local p = sp.exec({ "sleep", "10" })
          pid = p.pid
          lunio.spawn(p.wait, p)
          lunio.sleep(0)
          -- (not the local `loop`: a task holding it would keep it alive)
          lunio.get_running_loop():stop()
          lunio.sleep(1)
        end)
        assert.is_false(ok)
        assert.matches("stopped before the main task finished", tostring(err))
        assert.is_truthy(proc_state(pid))
      end
      collectgarbage()
      collectgarbage()
      assert.is_nil(proc_state(pid))
    end)
  end)

  describe("bad arguments", function()
    local cases = {
      { "exec", { nil }, "#1 to 'exec' (argv must be a list of strings, got nil)" },
      { "exec", { "ls" }, "#1 to 'exec' (argv must be a list of strings, got string)" },
      { "exec", { {} }, "#1 to 'exec' (argv is empty (it needs at least the program))" },
      { "exec", { { "" } }, "#1 to 'exec' (argv[1] (the program) is empty)" },
      { "exec", { { "ls", {} } }, "#1 to 'exec' (argv[2] must be a string, got table)" },
      { "exec", { { "ls", true } }, "#1 to 'exec' (argv[2] must be a string, got boolean)" },
      { "exec", { { "ls", "a\0b" } }, "#1 to 'exec' (argv[2] contains a NUL byte)" },
      { "exec", { { "ls", x = 1 } }, "#1 to 'exec' (argv must be a list (key x))" },
      { "exec", { { "ls", nil, "a" } }, "#1 to 'exec' (argv[2] must be a string, got nil)" },
      { "exec", { { "true" }, "pipe" }, "#2 to 'exec' (table expected, got string)" },
      { "exec", { { "true" }, { stdio = "pipe" } }, "#2 to 'exec' (unknown option 'stdio')" },
      { "exec", { { "true" }, { timeout = 1 } }, "#2 to 'exec' (unknown option 'timeout')" },
      { "exec", { { "true" }, { stdin = "PIPE" } },
        '#2 to \'exec\' (opts.stdin must be "inherit", "pipe" or "null", got "PIPE")' },
      { "exec", { { "true" }, { stderr = 1 } },
        '#2 to \'exec\' (opts.stderr must be "inherit", "pipe" or "null", got number)' },
      { "exec", { { "true" }, { cwd = 1 } }, "#2 to 'exec' (opts.cwd must be a string)" },
      { "exec", { { "true" }, { cwd = "" } }, "#2 to 'exec' (opts.cwd is empty)" },
      { "exec", { { "true" }, { cwd = "/\0" } }, "#2 to 'exec' (opts.cwd contains a NUL byte)" },
      { "exec", { { "true" }, { env = "A=1" } },
        "#2 to 'exec' (opts.env must be a table (name -> value))" },
      { "exec", { { "true" }, { env = { ["A=B"] = "1" } } },
        "#2 to 'exec' (opts.env: bad name \"A=B\" (names are non-empty, without '=' or NUL))" },
      { "exec", { { "true" }, { env = { "x" } } },
        "#2 to 'exec' (opts.env: bad name \"1\" (names are non-empty, without '=' or NUL))" },
      { "exec", { { "true" }, { env = { A = true } } },
        "#2 to 'exec' (opts.env.A must be a string, got boolean)" },
      { "exec", { { "true" }, { env = { A = "a\0" } } },
        "#2 to 'exec' (opts.env.A contains a NUL byte)" },
      { "exec", { { "true" }, { kill_grace = -1 } },
        "#2 to 'exec' (opts.kill_grace must be a number of seconds >= 0)" },
      { "run", { 42 }, "#1 to 'run' (argv must be a list of strings, got number)" },
      { "run", { { "true" }, { timeout = -0.5 } },
        "#2 to 'run' (opts.timeout must be a number of seconds >= 0)" },
      { "run", { { "true" }, { timeout = 0 / 0 } },
        "#2 to 'run' (opts.timeout must be a number of seconds >= 0)" },
      { "run", { { "true" }, { timeout = "1" } },
        "#2 to 'run' (opts.timeout must be a number of seconds >= 0)" },
      { "run", { { "true" }, { input = 1 } }, "#2 to 'run' (opts.input must be a string)" },
      { "run", { { "true" }, { check = 1 } }, "#2 to 'run' (opts.check must be a boolean)" },
      { "run", { { "true" }, { input = "x", stdin = "null" } },
        '#2 to \'run\' (opts.input needs opts.stdin = "pipe" (the default with input))' },
    }
    for _, c in ipairs(cases) do
      it(c[1] .. ": " .. c[3], async(function()
        assert.equal("bad argument " .. c[3], bad_arg(sp[c[1]], table.unpack(c[2], 1, 2)))
      end))
    end

    it("kill: unknown names, bad numbers, other types", async(function()
      local p <close> = sp.exec({ "sleep", "10" })
      assert.equal("bad argument #1 to 'kill' (unknown signal 'TERM' (names look like "
        .. "'SIGTERM'))", bad_arg(p.kill, p, "TERM"))
      assert.equal("bad argument #1 to 'kill' (not a signal number)", bad_arg(p.kill, p, 65))
      assert.equal("bad argument #1 to 'kill' (not a signal number)", bad_arg(p.kill, p, -1))
      assert.equal("bad argument #1 to 'kill' (signal name or number expected, got table)",
        bad_arg(p.kill, p, {}))
      assert.equal("bad argument #1 to 'kill' (signal name or number expected, got number)",
        bad_arg(p.kill, p, 1.5))
    end))

    it("communicate: input must be a string", async(function()
      local p <close> = sp.exec({ "true" }, { stdin = "pipe" })
      assert.equal("bad argument #1 to 'communicate' (string expected, got number)",
        bad_arg(p.communicate, p, 42))
    end))

    it("run and communicate outside a task", function()
      assert.matches("'run' called outside a running task", select(2, pcall(sp.run, { "true" })))
      local p = sp.exec({ "true" }, { stdout = "pipe" })
      assert.matches("'communicate' called outside a running task",
        select(2, pcall(p.communicate, p)))
      assert.matches("'wait' called outside a running task", select(2, pcall(p.wait, p)))
      p:close()
    end)
  end)
end)
