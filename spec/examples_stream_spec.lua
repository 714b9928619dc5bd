-- The networking examples run as documented (lua5.4 examples/X.lua, the
-- lua5.4 first in PATH, so `make check-asan` runs them sanitized too): the
-- servers in a child process, talked to by lunio clients from here.
local lunio = require "lunio"
local h = require "helper"

local q = h.shell_quote

local function env()
  return ("LUA_PATH=%s LUA_CPATH=%s"):format(q(h.absolute_path(package.path)),
    q(h.absolute_path(package.cpath)))
end

-- Starts a server example with port 0; returns {pid=, port=, pipe=}. The
-- shell's pid ($$) becomes the script's through exec.
local function start(script, pattern)
  local pipe = assert(io.popen(("echo $$; exec env %s lua5.4 %s 0 2>&1"):format(env(), script)))
  local ex = { pipe = pipe, head = {} }
  ex.pid = tonumber(pipe:read("l"))
  local line = pipe:read("l")
  ex.head[1] = line
  ex.port = tonumber(line and line:match(pattern))
  assert(ex.port, "the server did not start: " .. tostring(line))
  return ex
end

-- Stops it with SIGINT (as Ctrl-C would); returns the rest of its output
-- and its exit code.
local function stop(ex)
  os.execute("kill -INT " .. math.tointeger(ex.pid))
  local rest = ex.pipe:read("a")
  local _, _, code = ex.pipe:close()
  return rest, code
end

-- Runs fn as the main task of a fresh loop.
local function run(fn)
  local loop = lunio.new_loop()
  local ok, err = pcall(loop.run, loop, fn)
  loop:close()
  if not ok then error(err, 0) end
end

describe("examples/echo_server.lua and echo_client.lua", function()
  it("echo what clients send, one task per client, and stop on SIGINT", function()
    local ex = start("examples/echo_server.lua", "^echo server on 127%.0%.0%.1 port (%d+)$")
    local ok, err = pcall(function()
      run(function()
        local a <close> = lunio.open_connection("127.0.0.1", ex.port)
        local b <close> = lunio.open_connection("127.0.0.1", ex.port)
        a:write("from a")
        b:write("from b")
        assert.are.equal("from b", b:read())
        assert.are.equal("from a", a:read())
      end)
      local out, stderr, code = h.lua("examples/echo_client.lua",
        { tostring(ex.port), "one", "two words" })
      assert.are.equal(0, code, stderr)
      assert.are.equal("one\ntwo words\n", out)
    end)
    local rest, code = stop(ex)
    assert(ok, tostring(err))
    assert.are.equal(0, code, rest)
    assert.matches("connected\n", rest)
    assert.matches("closed\n", rest)
    assert.matches("stopped\n$", rest)
  end)

  it("the client reports a refused connection", function()
    local out, stderr, code = h.lua("examples/echo_client.lua", { "1" })
    assert.are.equal(1, code, out)
    assert.matches("echo_client: econnrefused", stderr)
  end)
end)

describe("examples/chat_server.lua", function()
  it("broadcasts every line to the other clients", function()
    local ex = start("examples/chat_server.lua", "^chat server on port (%d+)$")
    local ok, err = pcall(run, function()
      local function join(name)
        local s = lunio.open_connection("127.0.0.1", ex.port)
        assert.are.equal("Welcome! Your name: ", s:read_until(": "))
        s:write(name .. "\r\n") -- as telnet sends it
        return s
      end
      -- reads lines until one equals `want`
      local function expect(s, want)
        local _ <close> = lunio.timeout(2)
        for line in s:lines() do
          if line == want then return end
        end
        error("EOF before " .. want)
      end
      local alice <close> = join("alice")
      expect(alice, "* hello alice, 0 other(s) here; /who, /quit")
      local bob <close> = join("bob")
      expect(bob, "* hello bob, 1 other(s) here; /who, /quit")
      expect(alice, "* bob joins")
      local carol <close> = join("carol")
      expect(alice, "* carol joins")
      expect(bob, "* carol joins")
      alice:write("hi all\n")
      expect(bob, "alice: hi all")
      expect(carol, "alice: hi all")
      carol:write("/who\n")
      expect(carol, "* here: alice, bob, carol")
      local dup = join("bob")
      assert.matches("^Taken", dup:read_until(": "))
      dup:close()
      bob:write("/quit\n")
      assert.is_nil(bob:read_line())
      expect(alice, "* bob leaves")
      expect(carol, "* bob leaves")
    end)
    local rest, code = stop(ex)
    assert(ok, tostring(err))
    assert.are.equal(0, code, rest)
    assert.matches("stopped\n$", rest)
  end)
end)

describe("examples/port_check.lua", function()
  it("reports the open ports among many, concurrently", function()
    -- a listening socket: the kernel completes connects even while this
    -- loop does not run to accept them
    local loop = lunio.new_loop()
    local server = loop:run(function()
      return lunio.start_server(function() end, "127.0.0.1", 0)
    end)
    local closed = loop:run(function()
      local s = lunio.start_server(function() end, "127.0.0.1", 0)
      local port = s.port
      s:close()
      return port
    end)
    local out, stderr, code = h.lua("examples/port_check.lua", {
      "-c", "50", "-t", "2", "127.0.0.1:" .. server.port, "127.0.0.1:" .. closed,
      "localhost:" .. server.port .. "-" .. server.port + 1,
    })
    loop:close()
    assert.are.equal(0, code, stderr)
    assert.are.equal(("127.0.0.1:%d open\nlocalhost:%d open\n"
      .. "checked 4: 2 open, 2 closed, 0 timed out, 0 errors\n"):format(server.port,
        server.port), out)
  end)

  it("checks 127.0.0.1:1-1024 by default, and says how to use it", function()
    local out, stderr, code = h.lua("examples/port_check.lua", {})
    assert.are.equal(0, code, stderr)
    assert.matches("checked 1024: %d+ open, %d+ closed, 0 timed out, 0 errors\n$", out)
    out, stderr, code = h.lua("examples/port_check.lua", { "nonsense" })
    assert.are.equal(2, code, out)
    assert.matches("usage: port_check.lua", stderr)
  end)
end)
