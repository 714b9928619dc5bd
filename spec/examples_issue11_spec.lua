-- The examples of files, threads and signals run as documented (lua5.4
-- examples/X.lua) on real files, real worker threads and real signals
-- sent with kill(1).
local h = require "helper"
local q = h.shell_quote

local function sh(cmd)
  local ok, how, code = os.execute(cmd)
  assert(ok, ("command failed (%s %s): %s"):format(how, code, cmd))
end

local function sleep(s)
  local p = io.popen("sleep " .. s)
  p:close()
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function mktemp(flag) return h.mktemp("lunio-ex-spec", flag) end

-- The reference FNV-1a (32 bits) the example must agree with.
local function fnv1a(data)
  local hash = 2166136261
  for i = 1, #data do
    hash = ((hash ~ data:byte(i)) * 16777619) & 0xffffffff
  end
  return ("%08x"):format(hash)
end

-- LUA_PATH and LUA_CPATH of this process, absolute (for children that run
-- elsewhere and in the background).
local function lua_env()
  local cwd = os.getenv("PWD")
  local function absolute(path)
    return (path:gsub("[^;]+", function(e)
      if e:sub(1, 1) == "/" or not e:find("?", 1, true) then return e end
      return cwd .. "/" .. e:gsub("^%./", "")
    end))
  end
  return ("LUA_PATH=%s LUA_CPATH=%s"):format(q(absolute(package.path)),
    q(absolute(package.cpath)))
end

describe("examples/parallel_hash.lua", function()
  it("hashes every file under a directory with a progress line and a summary", function()
    local dir = mktemp("-d")
    sh("mkdir -p " .. q(dir .. "/sub/deeper") .. " && printf hello >" .. q(dir .. "/a.txt")
      .. " && : >" .. q(dir .. "/empty")
      .. " && head -c 2500000 /dev/urandom >" .. q(dir .. "/sub/big.bin")
      .. " && printf 'x\\0y' >" .. q(dir .. "/sub/deeper/nul")
      .. " && ln -s a.txt " .. q(dir .. "/link") .. " && mkfifo " .. q(dir .. "/fifo"))
    local out, err, code = h.lua("examples/parallel_hash.lua", { dir, "-j", "3" })
    local expect = {}
    for _, rel in ipairs { "a.txt", "empty", "sub/big.bin", "sub/deeper/nul" } do
      local data = read(dir .. "/" .. rel)
      expect[#expect + 1] = ("%s  %10d  %s"):format(fnv1a(data), #data, dir .. "/" .. rel)
    end
    sh("rm -rf " .. q(dir))
    assert.are.equal(0, code, err)
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal(5, #lines, out)
    for i = 1, 4 do assert.are.equal(expect[i], lines[i]) end
    assert.matches("^4 files, 2500008 bytes hashed in [%d.]+ s, 0 errors$", lines[5])
    assert.matches("%[4/4%] 2%.5 MB\n$", err) -- the progress line, ended
  end)

  it("reports what it cannot read and exits 1", function()
    local out, err, code = h.lua("examples/parallel_hash.lua", { "/nonexistent/dir" })
    assert.are.equal(1, code)
    assert.matches("0 files, 0 bytes hashed in [%d.]+ s, 1 errors", out)
    assert.matches("error: /nonexistent/dir: enoent", err)
  end)
end)

describe("examples/graceful_shutdown.lua", function()
  -- Starts the example in the background; returns its pid, its port, a
  -- function that waits for a line (blocking, or with lunio.sleep inside
  -- a loop), and one that waits for its exit and returns the output and
  -- the exit code. (Not under timeout(1): it forwards signals in its own
  -- way.)
  local function start(args)
    local out, pidfile, exitfile = mktemp(), mktemp("-u"), mktemp("-u")
    sh(("(%s lua5.4 examples/graceful_shutdown.lua %s >%s 2>&1 & "
      .. "echo $! >%s; wait $!; echo $? >%s.tmp; mv %s.tmp %s) >/dev/null 2>&1 &")
      :format(lua_env(), args, q(out), q(pidfile), q(exitfile), q(exitfile),
        q(exitfile), q(exitfile)))
    local function wait_for(pattern, nap)
      for _ = 1, 400 do
        local text = read(out) or ""
        if text:find(pattern) then return text end
        ;(nap or sleep)(0.025)
      end
      error("the example never printed " .. pattern .. ":\n" .. (read(out) or ""))
    end
    local port = tonumber(wait_for("ready pid=%d+ port=%d+"):match("port=(%d+)"))
    local pid = read(pidfile):match("%d+")
    local function finish()
      for i = 1, 400 do
        if i == 400 then os.execute("kill -KILL " .. pid) end
        local code = read(exitfile)
        if code then
          local text = read(out)
          os.remove(out)
          os.remove(pidfile)
          os.remove(exitfile)
          return text, tonumber(code)
        end
        sleep(0.025)
      end
      error("the example did not exit:\n" .. (read(out) or ""))
    end
    return pid, port, wait_for, finish
  end

  it("on SIGTERM stops accepting, finishes every accepted request, exits 0", function()
    local pid, _, wait_for, finish = start("--port 0 --work 0.3 --clients 3 --interval 0.05")
    wait_for("request 4 started")
    sh("kill -TERM " .. pid)
    local out, code = finish()
    assert.are.equal(0, code, out)
    local started, done = {}, {}
    for id in out:gmatch("request (%d+) started") do started[#started + 1] = id end
    for id in out:gmatch("request (%d+) done") do done[id] = true end
    assert.is_true(#started >= 4)
    for _, id in ipairs(started) do assert.is_true(done[id], "request " .. id .. " unfinished") end
    local accepted, finished = out:match("shut down cleanly: (%d+) accepted, (%d+) done")
    assert.are.equal(accepted, finished, out)
    assert.are.equal(#started, tonumber(accepted), out)
    assert.matches("SIGTERM: stopped accepting; finishing %d+ in flight", out)
    -- nothing starts after the SIGTERM line
    local after = out:match("SIGTERM: stopped accepting.*")
    assert.is_nil(after:find("started", 1, true), out)
  end)

  it("answers the request in flight, closes idle connections, refuses new ones", function()
    local lunio = require "lunio"
    local pid, port, wait_for, finish = start("--port 0 --work 1")
    local loop = lunio.new_loop()
    loop:set_watchdog(15 * h.time_scale, function() loop:stop() end) -- never hang
    loop:run(function()
      local busy <close> = lunio.open_connection("127.0.0.1", port)
      local idle <close> = lunio.open_connection("127.0.0.1", port)
      busy:write("hello\n")
      wait_for("request 1 started: hello", lunio.sleep)
      sh("kill -TERM " .. pid)
      wait_for("SIGTERM: stopped accepting; finishing 1 in flight", lunio.sleep)
      -- still draining (the request takes 1 s): new connections are refused
      local ok, err = pcall(lunio.open_connection, "127.0.0.1", port)
      assert.is_false(ok)
      assert.are.equal("econnrefused", err.kind)
      assert.is_nil(idle:read_line()) -- closed by the server
      assert.are.equal("done 1: hello", busy:read_line())
      assert.is_nil(busy:read_line())
    end)
    loop:close()
    local out, code = finish()
    assert.are.equal(0, code, out)
    assert.matches("shut down cleanly: 1 accepted, 1 done %(1 SIGTERM%)\n$", out)
  end)

  it("a second SIGTERM while draining gives up on the rest, exits 1", function()
    local pid, _, wait_for, finish = start("--port 0 --work 5 --clients 2 --interval 0.05")
    wait_for("request 2 started")
    sh("kill -TERM " .. pid)
    wait_for("SIGTERM: stopped accepting")
    sh("kill -TERM " .. pid)
    local out, code = finish()
    assert.are.equal(1, code, out)
    assert.matches("SIGTERM again: abandoning 2 request%(s%)", out)
    assert.is_nil(out:find("done", 1, true))
  end)
end)
