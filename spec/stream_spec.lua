-- lunio's streams on real sockets: TCP on 127.0.0.1 (and ::1), Unix
-- sockets in a temporary directory, UDP. Every test runs under
-- lunio.testing.async, which fails it when tasks, handles, streams or file
-- descriptors are left behind.
local lunio = require "lunio"
local core = require "lunio.core"
local h = require "helper"

local function async(fn, opts)
  opts = opts or {}
  opts.timeout = opts.timeout or 5
  return h.async(fn, opts)
end

local kind_of = h.kind_of

-- Runs f(...), which must raise a lunio error of `kind`; returns it.
local function raises(kind, f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error of kind " .. kind)
  assert(lunio.is_error(err, kind), "expected kind " .. kind .. ", got " .. tostring(err))
  return err
end

-- Whether the loopback interface has ::1 (the kernel's list of IPv6
-- addresses; no such file when IPv6 is off).
local function has_ipv6()
  local f = io.open("/proc/net/if_inet6")
  local text = f and f:read("a") or ""
  if f then f:close() end
  return text:find("^0+1 ") ~= nil or text:find("\n0+1 ") ~= nil
end
local IPV6 = has_ipv6()

-- An echo server on 127.0.0.1 for the duration of fn(server).
local function echo(s)
  while true do
    local d = s:read()
    if not d then break end
    s:write(d)
  end
end

-- A server whose handler is fn, a client connected to it and the server's
-- end of that connection: {server=, c=, s=}, closed as a to-be-closed.
local function pair(fn, opts)
  local accepted, done = lunio.Future(), lunio.Event()
  local server = lunio.start_server(function(s)
    accepted:set_result(s)
    if fn then return fn(s) end
    done:wait() -- the test uses s; the server closes it afterwards
  end, "127.0.0.1", 0, opts)
  local client = lunio.open_connection("127.0.0.1", server.port, opts)
  return setmetatable({ server = server, c = client, s = accepted:await() }, {
    __close = function(p, err)
      p.c:close()
      done:set()
      p.server:close()
      if err == nil then p.server:wait_closed() end
    end,
  })
end

-- Sleeps a few milliseconds at a time until cond() holds (2 s at most).
local function wait_for(cond)
  for _ = 1, 400 do
    if cond() then return end
    lunio.sleep(0.005)
  end
  error("condition never held", 2)
end

-- Real (not virtual) time in seconds, from /proc/uptime.
local function real_time()
  local f = assert(io.open("/proc/uptime"))
  local t = f:read("n")
  f:close()
  return t
end

local function is_socket(path)
  return os.execute("test -S " .. h.shell_quote(path)) == true
end

local function tmpdir() return h.mktemp("lunio-stream", "-d") end

describe("lunio streams", function()
  setup(function() lunio.new_loop():close() end)

  describe("TCP", function()
    it("echoes, and peername/sockname give host and port", async(function()
      local server <close> = lunio.start_server(echo, "127.0.0.1", 0)
      assert.is_true(server.port > 0)
      local host, port = server:sockname()
      assert.are.same({ "127.0.0.1", server.port }, { host, port })
      local c <close> = lunio.open_connection("127.0.0.1", server.port)
      local ph, pp = c:peername()
      assert.are.same({ "127.0.0.1", server.port }, { ph, pp })
      local sh, sp = c:sockname()
      assert.are.equal("127.0.0.1", sh)
      assert.is_true(sp > 0 and sp ~= server.port)
      c:write("hello")
      assert.are.equal("hello", c:read_exactly(5))
    end))

    it("read(n) returns what arrived, up to n; read(0) is \"\"", async(function()
      local p <close> = pair()
      local c, s = p.c, p.s
      c:write("abcdef")
      assert.are.equal("abc", s:read_exactly(3))
      assert.are.equal("de", s:read(2))
      assert.are.equal("f", s:read(100))
      assert.are.equal("", s:read(0))
      c:write(string.rep("x", 200000))
      local got = s:read()
      assert.is_true(#got > 0 and #got <= 65536, tostring(#got))
      local n = #got
      while n < 200000 do n = n + #s:read() end
      assert.are.equal(200000, n)
    end))

    it("keeps bytes in order when small arrivals outgrow the stream's own buffer",
      async(function()
        local p <close> = pair()
        local c, s = p.c, p.s
        local sent = {}
        for i = 1, 40 do -- separate arrivals: 5 to 200 bytes each
          local piece = ("%03d:"):format(i) .. string.rep(string.char(64 + i % 26), i * 5)
          sent[#sent + 1] = piece
          c:write(piece)
          lunio.sleep(0.001)
          if i % 7 == 0 then -- take a little now and then
            local want = table.concat(sent)
            local got = s:read_exactly(#want > 10 and 10 or #want)
            assert.are.equal(want:sub(1, #got), got)
            sent = { want:sub(#got + 1) }
          end
        end
        local want = table.concat(sent)
        assert.are.equal(want, s:read_exactly(#want))
      end))

    it("read returns nil at EOF, again and again", async(function()
      local p <close> = pair()
      local c, s = p.c, p.s
      c:write("last")
      c:close()
      assert.are.equal("last", s:read())
      assert.is_nil(s:read())
      assert.is_nil(s:read())
      assert.is_nil(s:read_line())
      assert.are.equal("", s:read_all())
    end))

    it("read_exactly raises kind eof with .partial on an early EOF", async(function()
      local p <close> = pair()
      local c, s = p.c, p.s
      c:write("1234")
      c:shutdown()
      local err = raises("eof", s.read_exactly, s, 10)
      assert.are.equal("1234", err.partial)
      assert.matches("4 of 10", err.message)
      assert.is_nil(s:read())
    end))

    it("read_line strips \\n and \\r\\n, gives the last unterminated line, then nil",
      async(function()
        local p <close> = pair()
        local c, s = p.c, p.s
        c:write("one\ntwo\r\n\nthr")
        c:write("ee")
        c:close()
        assert.are.equal("one", s:read_line())
        assert.are.equal("two", s:read_line())
        assert.are.equal("", s:read_line())
        assert.are.equal("three", s:read_line())
        assert.is_nil(s:read_line())
      end))

    it("read_until includes the separator, across writes", async(function()
      local p <close> = pair()
      local c, s = p.c, p.s
      c:write("a--")
      local t = lunio.spawn(function() return s:read_until("--|") end)
      lunio.sleep(0.01)
      c:write("|b-")
      c:write("-|tail")
      assert.are.equal("a--|", t:await())
      assert.are.equal("b--|", s:read_until("--|"))
      c:close()
      local err = raises("eof", s.read_until, s, "--|")
      assert.are.equal("tail", err.partial)
      assert.is_nil(s:read_until("--|"))
    end))

    it("lines() iterates read_line", async(function()
      local p <close> = pair()
      local c, s = p.c, p.s
      c:write("x\ny\nz")
      c:close()
      local got = {}
      for line in s:lines() do got[#got + 1] = line end
      assert.are.same({ "x", "y", "z" }, got)
    end))

    it("read_all reads up to EOF", async(function()
      local p <close> = pair()
      local c, s = p.c, p.s
      local big = string.rep("0123456789", 50000)
      local w = lunio.spawn(function() c:write(big); c:close() end)
      assert.are.equal(big, s:read_all())
      w:await()
    end))

    it("read_line and read_until raise kind limit past opts.limit; the data stays",
      async(function()
        local p <close> = pair(nil, { limit = 100 })
        local c, s = p.c, p.s
        c:write(string.rep("a", 150))
        local err = raises("limit", s.read_line, s)
        assert.are.equal(100, err.limit)
        -- the separator beyond the limit: still kind limit
        c:write("\n")
        lunio.sleep(0.01)
        raises("limit", s.read_line, s)
        assert.are.equal(string.rep("a", 150) .. "\n", s:read_exactly(151))
        -- a line within the limit is fine
        c:write(string.rep("b", 99) .. "\n")
        assert.are.equal(string.rep("b", 99), s:read_line())
      end))

    it("a line longer than the default limit (1 MiB) raises kind limit",
      async(function()
        local p <close> = pair()
        local c, s = p.c, p.s
        local w = lunio.spawn(function() c:write(string.rep("z", 1100000)) end)
        raises("limit", s.read_line, s)
        local unread = s:buffer_info()
        assert.is_true(unread >= 1048576 and unread < 1048576 + 3 * 65536, tostring(unread))
        assert.are.equal(1100000, #s:read_exactly(1100000))
        w:await()
      end))

    it("writes megabytes and drain() waits until they left", async(function()
      local p <close> = pair()
      local c, s = p.c, p.s
      local data = {}
      for i = 1, 4000 do data[i] = ("%07d|"):format(i) .. string.rep("d", 1000) end
      local all = table.concat(data)
      local reader = lunio.spawn(function() return s:read_exactly(#all) end)
      for i = 1, #data do c:write(data[i]) end
      c:drain()
      local _, unsent = c:buffer_info()
      assert.are.equal(0, unsent)
      assert.are.equal(all, reader:await())
    end))

    it("a slow reader makes the writer wait, and memory stays bounded", async(function()
      local hw = 64 * 1024
      local p <close> = pair()
      local c, s = p.c, p.s
      local written, max_unsent = 0, 0
      local chunk = string.rep("w", 16 * 1024)
      local writer = lunio.spawn(function()
        for _ = 1, 400 do -- 6.4 MiB
          c:write(chunk)
          written = written + #chunk
          local _, unsent = c:buffer_info()
          if unsent > max_unsent then max_unsent = unsent end
        end
        c:shutdown()
      end)
      lunio.sleep(0.05) -- nobody reads: the kernel buffers fill, then ours
      local stalled = written
      assert.is_true(stalled < 6 * 1024 * 1024, "the writer never waited")
      lunio.sleep(0.05)
      assert.are.equal(stalled, written) -- still waiting
      local unread, _, reading = s:buffer_info()
      assert.is_false(reading) -- the reader paused reading from the kernel
      assert.is_true(unread <= 2 * hw + 65536, tostring(unread))
      local total = 0
      while true do
        local d = s:read(4096)
        if not d then break end
        total = total + #d
        if total % (256 * 1024) == 0 then lunio.sleep(0) end
      end
      writer:await()
      assert.are.equal(400 * #chunk, total)
      assert.is_true(max_unsent <= hw + #chunk, tostring(max_unsent))
    end))

    it("write_high_water = 0 makes each write wait until sent", async(function()
      local p <close> = pair(nil, { write_high_water = 0 })
      local c, s = p.c, p.s
      local t = lunio.spawn(function()
        for _ = 1, 50 do c:write(string.rep("q", 100000)) end
        return select(2, c:buffer_info())
      end)
      local got = 0
      while got < 5000000 do got = got + #s:read() end
      assert.are.equal(0, t:await())
    end))

    it("shutdown() half closes: the peer sees EOF and can still answer",
      async(function()
        local server <close> = lunio.start_server(function(s)
          local req = s:read_all()
          s:write("got " .. #req)
        end, "127.0.0.1", 0)
        local c <close> = lunio.open_connection("127.0.0.1", server.port)
        c:write("request body")
        c:shutdown()
        c:shutdown() -- idempotent
        raises("closed", c.write, c, "more")
        assert.are.equal("got 12", c:read_all())
      end))

    it("a peer that resets makes read raise kind econnreset", async(function()
      local p <close> = pair()
      local c, s = p.c, p.s
      c:write("x")
      assert.are.equal("x", s:read())
      c:abort()
      local err = raises("econnreset", s.read, s)
      assert.is_number(err.code)
      raises("econnreset", s.read, s) -- sticky
    end))

    it("writing to a peer that went away raises epipe or econnreset", async(function()
      local p <close> = pair()
      local c, s = p.c, p.s
      c:abort()
      lunio.sleep(0.01)
      local ok, err
      for _ = 1, 100 do
        ok, err = pcall(s.write, s, string.rep("p", 65536))
        if not ok then break end
        lunio.sleep(0)
      end
      assert.is_false(ok)
      assert.is_true(lunio.is_error(err, "epipe") or lunio.is_error(err, "econnreset"),
        tostring(err))
    end))

    it("after close: reads and writes raise kind closed; close is idempotent",
      async(function()
        local p <close> = pair()
        local c, s = p.c, p.s
        c:close()
        c:close()
        assert.is_true(c:closed())
        raises("closed", c.read, c)
        raises("closed", c.read_line, c)
        raises("closed", c.read_exactly, c, 1)
        raises("closed", c.write, c, "x")
        raises("closed", c.drain, c)
        raises("closed", c.peername, c)
        assert.is_nil(s:read())
        assert.matches("closed", tostring(c))
      end))

    it("closing a stream wakes its reader and writers with kind closed", async(function()
      local p <close> = pair(nil, { write_high_water = 0 })
      local c, s = p.c, p.s
      local reader = lunio.spawn(function() return kind_of(c.read, c) end)
      local writer = lunio.spawn(function()
        return kind_of(c.write, c, string.rep("x", 8 * 1024 * 1024))
      end)
      lunio.sleep(0.02)
      c:close()
      assert.are.equal("closed", reader:await())
      assert.are.equal("closed", writer:await())
      s:close()
    end))

    it("close() still sends what was queued", async(function()
      local big = string.rep("c", 3 * 1024 * 1024)
      local p <close> = pair()
      local c, s = p.c, p.s
      c:write(big) -- returns with most of it queued
      c:close()
      assert.are.equal(#big, #s:read_all())
    end))

    it("to-be-closed streams close at the end of the block", async(function()
      local server <close> = lunio.start_server(echo, "127.0.0.1", 0)
      local saved
      do
        local c <close> = lunio.open_connection("127.0.0.1", server.port)
        saved = c
      end
      assert.is_true(saved:closed())
    end))

    it("a second concurrent reader gets kind invalid_state", async(function()
      local p <close> = pair()
      local c, s = p.c, p.s
      local first = lunio.spawn(function() return s:read() end)
      lunio.sleep(0)
      local err = raises("invalid_state", s.read, s)
      assert.matches("already reading", err.message)
      c:write("one")
      assert.are.equal("one", first:await())
    end))

    it("set_nodelay takes a boolean", async(function()
      local p <close> = pair()
      local c = p.c
      c:set_nodelay(false)
      c:set_nodelay(true)
    end))

    it("connecting to a closed port raises econnrefused with .host and .port",
      async(function()
        local server = lunio.start_server(echo, "127.0.0.1", 0)
        local port = server.port
        server:close()
        local err = raises("econnrefused", lunio.open_connection, "127.0.0.1", port)
        assert.are.equal("127.0.0.1", err.host)
        assert.are.equal(port, err.port)
        assert.are.equal(1, #err.errors)
        assert.matches("cannot connect to 127.0.0.1 port " .. port, err.message)
      end))

    it("tries every address the name resolves to", async(function()
      local server <close> = lunio.start_server(echo, "127.0.0.1", 0)
      local saved = core.stream.resolve
      local asked
      core.stream.resolve = function(host, port)
        asked = { host, port }
        return { { address = "::1", family = "inet6" },
          { address = "127.0.0.1", family = "inet" } }
      end
      local ok, c = pcall(lunio.open_connection, "both.example", server.port)
      core.stream.resolve = saved
      assert(ok, tostring(c))
      assert.are.same({ "both.example", server.port }, asked)
      assert.are.equal("127.0.0.1", c:peername())
      c:close()
      -- when none connects, the error lists each attempt
      local port = server.port
      server:close()
      core.stream.resolve = function()
        return { { address = "::1" }, { address = "127.0.0.1" } }
      end
      local err = h.catch(lunio.open_connection, "both.example", port)
      core.stream.resolve = saved
      assert.are.equal("econnrefused", err.kind)
      assert.are.equal(2, #err.errors)
      assert.matches("::1: ", err.message, 1, true)
      assert.matches("127.0.0.1: ", err.message, 1, true)
    end))

    it("resolves names (localhost)", async(function()
      local server <close> = lunio.start_server(echo, "127.0.0.1", 0)
      local c <close> = lunio.open_connection("localhost", server.port)
      c:write("n")
      assert.are.equal("n", c:read())
    end))

    it("opts.timeout bounds the whole connect (kind timeout)", async(function()
      local server <close> = lunio.start_server(echo, "127.0.0.1", 0)
      local err = raises("timeout", lunio.open_connection, "127.0.0.1", server.port,
        { timeout = 0 })
      assert.matches("timed out after 0 s", err.message)
      -- a generous timeout changes nothing
      local c <close> = lunio.open_connection("127.0.0.1", server.port, { timeout = 5 })
      c:write("t")
      assert.are.equal("t", c:read())
    end))

    it("opts.timeout ends a connect that hangs", async(function()
      -- a listener that never accepts, with a full backlog: SYNs are dropped
      local p = io.popen([[exec python3 -c '
import os, socket, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(0)
print(s.getsockname()[1], os.getpid(), flush=True)
time.sleep(30)']], "r")
      local port, pid = p:read("n", "n")
      local hold = {}
      local t0 = lunio.now()
      local err
      for _ = 1, 8 do -- fill the backlog
        local ok, c = pcall(lunio.open_connection, "127.0.0.1", port, { timeout = 0.2 })
        if not ok then err = c; break end
        hold[#hold + 1] = c
      end
      for _, c in ipairs(hold) do c:close() end
      os.execute("kill " .. math.tointeger(pid))
      p:close()
      assert(err, "every connect succeeded")
      assert.are.equal("timeout", err.kind)
      assert.is_true(lunio.now() - t0 < 3 * h.time_scale)
    end, { timeout = 10 }))

    if IPV6 then
      it("works over IPv6 (::1)", async(function()
        local server <close> = lunio.start_server(echo, "::1", 0)
        local host = server:sockname()
        assert.are.equal("::1", host)
        local c <close> = lunio.open_connection("::1", server.port)
        c:write("six")
        assert.are.equal("six", c:read())
        assert.are.equal("::1", c:peername())
      end))

      it("host nil listens on every interface, IPv4 and IPv6, one port",
        async(function()
          local server <close> = lunio.start_server(echo, nil, 0)
          assert.are.equal(2, #server:socknames())
          for _, host in ipairs({ "127.0.0.1", "::1" }) do
            local c <close> = lunio.open_connection(host, server.port)
            c:write(host)
            assert.are.equal(host, c:read())
          end
        end))
    end
  end)

  describe("servers", function()
    local reports
    before_each(function()
      reports = h.reports(function(ctx)
        return tostring(ctx.message):find("connection handler", 1, true) ~= nil
      end)
    end)
    after_each(function() h.restore_handler() end)

    it("run one handler task per connection and count connections", async(function()
      local started = 0
      local release = lunio.Event()
      local server <close> = lunio.start_server(function(s)
        started = started + 1
        release:wait()
        s:write("bye")
      end, "127.0.0.1", 0)
      local clients = {}
      for i = 1, 5 do clients[i] = lunio.open_connection("127.0.0.1", server.port) end
      wait_for(function() return started == 5 end)
      assert.are.equal(5, server:connections())
      wait_for(function() return started == 5 end)
      release:set()
      for _, c in ipairs(clients) do
        assert.are.equal("bye", c:read_all())
        c:close()
      end
      wait_for(function() return server:connections() == 0 end)
      local accepted, errors = server:stats()
      assert.are.same({ 5, 0 }, { accepted, errors })
    end))

    it("close the stream when the handler raises; the error is reported, the "
      .. "server keeps serving", async(function()
        local server <close> = lunio.start_server(function(s)
          local line = s:read_line()
          if line == "fail" then error("handler failed on purpose") end
          s:write("ok:" .. line)
        end, "127.0.0.1", 0)
        local c1 <close> = lunio.open_connection("127.0.0.1", server.port)
        c1:write("fail\n")
        assert.is_nil(c1:read()) -- closed by the server
        wait_for(function() return #reports == 1 end)
        assert.matches("handler failed on purpose", tostring(reports[1].error))
        assert.matches("connection handler", reports[1].message)
        assert.is_string(reports[1].traceback)
        local c2 <close> = lunio.open_connection("127.0.0.1", server.port)
        c2:write("fine\n")
        assert.are.equal("ok:fine", c2:read_all())
      end))

    it("close() stops accepting; open connections go on", async(function()
      local server = lunio.start_server(echo, "127.0.0.1", 0)
      local c <close> = lunio.open_connection("127.0.0.1", server.port)
      c:write("1")
      assert.are.equal("1", c:read())
      server:close()
      server:close()
      assert.is_false(server:is_serving())
      raises("econnrefused", lunio.open_connection, "127.0.0.1", server.port)
      c:write("2")
      assert.are.equal("2", c:read())
      assert.are.equal(1, server:connections())
      c:close()
      server:wait_closed()
      assert.are.equal(0, server:connections())
    end))

    it("close{abort=true} also closes the connections and cancels the handlers",
      async(function()
        local cancelled, reading = 0, 0
        local server = lunio.start_server(function(s)
          reading = reading + 1
          local ok, err = pcall(s.read, s)
          if not ok and lunio.is_cancelled(err) then cancelled = cancelled + 1 end
          error(err, 0)
        end, "127.0.0.1", 0)
        local c1 <close> = lunio.open_connection("127.0.0.1", server.port)
        local c2 <close> = lunio.open_connection("127.0.0.1", server.port)
        wait_for(function() return reading == 2 end)
        server:close({ abort = true })
        server:wait_closed()
        assert.are.equal(2, cancelled)
        assert.are.equal(0, #reports) -- cancellations are not reported
        for _, c in ipairs({ c1, c2 }) do
          local ok, d = pcall(c.read, c)
          assert.is_true((ok and d == nil) or lunio.is_error(d, "econnreset"), tostring(d))
        end
      end))

    it("serve_forever returns when the server is closed; cancelling it closes it",
      async(function()
        local server = lunio.start_server(echo, "127.0.0.1", 0)
        local t = lunio.spawn(function() server:serve_forever(); return "done" end)
        lunio.sleep(0.01)
        assert.is_false(t:done())
        server:close()
        assert.are.equal("done", t:await())
        local server2 = lunio.start_server(echo, "127.0.0.1", 0)
        local t2 = lunio.spawn(server2.serve_forever, server2)
        lunio.sleep(0.01)
        t2:cancel()
        assert.are.equal("cancelled", kind_of(t2.await, t2))
        assert.is_false(server2:is_serving())
      end))

    it("opts.reuseport lets two servers share a port", async(function()
      local a <close> = lunio.start_server(echo, "127.0.0.1", 0, { reuseport = true })
      local b <close> = lunio.start_server(echo, "127.0.0.1", a.port, { reuseport = true })
      assert.are.equal(a.port, b.port)
      local err = raises("eaddrinuse", lunio.start_server, echo, "127.0.0.1", a.port)
      assert.are.equal(a.port, err.port)
    end))

    it("opts.backlog is accepted", async(function()
      local server <close> = lunio.start_server(echo, "127.0.0.1", 0, { backlog = 4 })
      local c <close> = lunio.open_connection("127.0.0.1", server.port)
      c:write("b")
      assert.are.equal("b", c:read())
    end))

    it("closing the loop cancels the handlers and closes every stream and server",
      function()
        local fds = core.open_fds()
        local loop = lunio.new_loop()
        local cleaned = 0
        local clients = {} -- held: a collected stream would close
        loop:run(function()
          local server = lunio.start_server(function(s)
            local _ <close> = setmetatable({}, { __close = function() cleaned = cleaned + 1 end })
            s:read()
          end, "127.0.0.1", 0)
          for i = 1, 3 do clients[i] = lunio.open_connection("127.0.0.1", server.port) end
          wait_for(function() return server:connections() == 3 end)
        end)
        loop:close()
        assert.are.equal(3, cleaned)
        assert.is_true(clients[3]:closed()) -- closed by the loop
        collectgarbage()
        assert.are.equal(fds, core.open_fds())
      end)

    it("accept is a passive wait: virtual time jumps past it", async(function()
      local server <close> = lunio.start_server(echo, "127.0.0.1", 0)
      local t0 = lunio.now()
      lunio.sleep(3600)
      assert.is_true(lunio.now() - t0 >= 3600)
      local c <close> = lunio.open_connection("127.0.0.1", server.port)
      local reader = lunio.spawn(function() return c:read() end) -- passive too
      lunio.sleep(60)
      c:write("v")
      assert.are.equal("v", reader:await())
    end, { virtual_time = true }))

    it("a write in flight holds virtual time; reads do not", async(function()
      local p <close> = pair()
      local c, s = p.c, p.s
      -- only a read pending: the clock jumps
      local r0 = real_time()
      lunio.sleep(30)
      assert.is_true(real_time() - r0 < 1 * h.time_scale)
      -- a write waits for the reader: the clock runs at real speed
      local w = lunio.spawn(function() c:write(string.rep("h", 16 * 1024 * 1024)) end)
      lunio.sleep(0)
      r0 = real_time()
      lunio.sleep(0.3)
      assert.is_true(real_time() - r0 >= 0.25)
      assert.are.equal(16 * 1024 * 1024, #s:read_exactly(16 * 1024 * 1024))
      w:await()
    end, { virtual_time = true }))
  end)

  describe("cancellation", function()
    it("in read loses no data", async(function()
      local p <close> = pair()
      local c, s = p.c, p.s
      local t = lunio.spawn(function() return s:read() end)
      lunio.sleep(0.01)
      t:cancel()
      assert.are.equal("cancelled", kind_of(t.await, t))
      c:write("kept")
      assert.are.equal("kept", s:read())
      -- woken with data, then cancelled before it ran: the data stays
      local t2 = lunio.spawn(function() return s:read() end)
      lunio.sleep(0.01)
      c:write("still kept")
      while select(1, s:buffer_info()) == 0 do lunio.sleep(0) end
      t2:cancel()
      assert.are.equal("cancelled", kind_of(t2.await, t2))
      assert.are.equal("still kept", s:read())
    end))

    it("in read_exactly, read_line, read_until and read_all loses no data",
      async(function()
        local p <close> = pair()
        local c, s = p.c, p.s
        local calls = {
          function() return s:read_exactly(10) end,
          function() return s:read_line() end,
          function() return s:read_until("##") end,
          function() return s:read_all() end,
        }
        for i, f in ipairs(calls) do
          local t = lunio.spawn(f)
          lunio.sleep(0.01)
          c:write("p" .. i)
          lunio.sleep(0.01)
          t:cancel()
          assert.are.equal("cancelled", kind_of(t.await, t))
          assert.are.equal("p" .. i, s:read(2))
        end
      end))

    it("in lines() loses no data", async(function()
      local p <close> = pair()
      local c, s = p.c, p.s
      local t = lunio.spawn(function()
        for line in s:lines() do if line == "stop" then break end end
      end)
      c:write("a\npartial")
      lunio.sleep(0.01)
      t:cancel()
      kind_of(t.await, t)
      c:write(" line\n")
      assert.are.equal("partial line", s:read_line())
    end))

    it("in write and drain leaves the stream usable", async(function()
      local p <close> = pair()
      local c, s = p.c, p.s
      local big = string.rep("W", 8 * 1024 * 1024)
      local w = lunio.spawn(function() c:write(big) end)
      lunio.sleep(0.01)
      assert.is_false(w:done())
      w:cancel()
      assert.are.equal("cancelled", kind_of(w.await, w))
      local d = lunio.spawn(function() c:drain() end)
      lunio.sleep(0.01)
      d:cancel()
      assert.are.equal("cancelled", kind_of(d.await, d))
      local r = lunio.spawn(function() return s:read_exactly(#big + 3) end)
      c:write("end")
      c:drain()
      local got = r:await()
      assert.are.equal(#big + 3, #got)
      assert.are.equal("end", got:sub(-3))
    end))

    it("in shutdown leaves the stream usable", async(function()
      local p <close> = pair(nil, { write_high_water = 0 })
      local c, s = p.c, p.s
      local w = lunio.spawn(function() c:write(string.rep("S", 4 * 1024 * 1024)) end)
      lunio.sleep(0.01)
      local t = lunio.spawn(function() c:shutdown() end)
      lunio.sleep(0.01)
      t:cancel()
      assert.are.equal("cancelled", kind_of(t.await, t))
      w:cancel()
      kind_of(w.await, w)
      assert.are.equal(4 * 1024 * 1024, #s:read_all())
    end))

    it("in connect closes the half-made stream", async(function()
      local server <close> = lunio.start_server(echo, "127.0.0.1", 0)
      local t = lunio.spawn(lunio.open_connection, "127.0.0.1", server.port)
      t:cancel()
      assert.are.equal("cancelled", kind_of(t.await, t))
      local t2 = lunio.spawn(lunio.open_connection, "127.0.0.1", server.port)
      lunio.sleep(0)
      t2:cancel()
      kind_of(t2.await, t2)
    end))

    it("in serve_forever and wait_closed", async(function()
      local server = lunio.start_server(echo, "127.0.0.1", 0)
      local _ <close> = lunio.open_connection("127.0.0.1", server.port)
      local t = lunio.spawn(server.wait_closed, server)
      lunio.sleep(0.01)
      t:cancel()
      assert.are.equal("cancelled", kind_of(t.await, t))
      server:close({ abort = true })
      server:wait_closed()
    end))
  end)

  describe("Unix sockets", function()
    local dir
    before_each(function() dir = tmpdir() end)
    after_each(function() os.execute("rm -rf " .. dir) end)

    it("echo, peername gives the path; the file is removed at close", async(function()
      local path = dir .. "/echo.sock"
      local server = lunio.start_unix_server(echo, path)
      assert.are.equal(path, server:sockname())
      local c = lunio.open_unix_connection(path)
      assert.are.equal(path, c:peername())
      c:write("unix")
      assert.are.equal("unix", c:read())
      assert.is_true(is_socket(path))
      server:close()
      assert.is_false(is_socket(path))
      c:close()
      server:wait_closed()
    end))

    it("replaces a socket file left behind", async(function()
      local path = dir .. "/stale.sock"
      -- a server that ended without removing its file
      assert(os.execute(("python3 -c 'import socket; socket.socket(socket.AF_UNIX)"
        .. ".bind(\"%s\")'"):format(path)))
      assert.is_true(is_socket(path))
      local _ <close> = lunio.start_unix_server(echo, path)
      local c <close> = lunio.open_unix_connection(path)
      c:write("ok")
      assert.are.equal("ok", c:read())
    end))

    it("connecting to a missing socket raises enoent", async(function()
      local err = raises("enoent", lunio.open_unix_connection, dir .. "/missing.sock")
      assert.are.equal(dir .. "/missing.sock", err.path)
    end))
  end)

  describe("UDP", function()
    it("send and recv give data, host and port; sockname", async(function()
      local a <close> = lunio.udp_bind("127.0.0.1", 0)
      local b <close> = lunio.udp_bind("127.0.0.1", 0)
      local ahost, aport = a:sockname()
      local _, bport = b:sockname()
      assert.are.equal("127.0.0.1", ahost)
      a:send("ping", "127.0.0.1", bport)
      local data, host, port = b:recv()
      assert.are.same({ "ping", "127.0.0.1", aport }, { data, host, port })
      b:send("", "localhost", aport)
      assert.are.equal("", (a:recv()))
      for i = 1, 100 do a:send(tostring(i), "127.0.0.1", bport) end
      for i = 1, 100 do assert.are.equal(tostring(i), (b:recv())) end
    end))

    it("reports a datagram larger than the buffer instead of cutting it", async(function()
      local a <close> = lunio.udp_bind("127.0.0.1", 0)
      local b <close> = lunio.udp_bind("127.0.0.1", 0, { max_datagram = 100 })
      local _, bport = b:sockname()
      local _, aport = a:sockname()
      a:send(string.rep("u", 300), "127.0.0.1", bport)
      local err = raises("emsgsize", b.recv, b)
      assert.are.equal(100, #err.partial)
      assert.are.equal(aport, err.port)
      a:send("small", "127.0.0.1", bport)
      assert.are.equal("small", (b:recv()))
    end))

    it("a cancelled recv loses no datagram; recv after close raises closed",
      async(function()
        local a <close> = lunio.udp_bind("127.0.0.1", 0)
        local b = lunio.udp_bind("127.0.0.1", 0)
        local _, bport = b:sockname()
        local t = lunio.spawn(b.recv, b)
        lunio.sleep(0.01)
        t:cancel()
        kind_of(t.await, t)
        a:send("kept", "127.0.0.1", bport)
        assert.are.equal("kept", (b:recv()))
        local waiting = lunio.spawn(function() return kind_of(b.recv, b) end)
        lunio.sleep(0.01)
        b:close()
        assert.are.equal("closed", waiting:await())
        raises("closed", b.recv, b)
        raises("closed", b.send, b, "x", "127.0.0.1", 9)
      end))

    it("send never waits: it queues or raises", async(function()
      local a <close> = lunio.udp_bind("127.0.0.1", 0)
      local b <close> = lunio.udp_bind("127.0.0.1", 0)
      local _, bport = b:sockname()
      local sent = 0
      local ok, err = true, nil
      local t0 = lunio.now()
      for _ = 1, 5000 do
        ok, err = pcall(a.send, a, string.rep("f", 8000), "127.0.0.1", bport)
        if not ok then break end
        sent = sent + 1
      end
      assert.is_true(lunio.now() - t0 < 2 * h.time_scale)
      assert.is_true(ok or lunio.is_error(err, "enobufs"), tostring(err))
      assert.is_true(sent > 0)
    end))
  end)

  describe("bad arguments", function()
    local function bad(pattern, f, ...)
      local msg = h.errmsg(f, ...)
      assert.matches(pattern, msg, 1, true)
    end

    it("are reported as such by every function", async(function()
      local fn = function() end
      bad("bad argument #1 to 'open_connection' (string expected, got number)",
        lunio.open_connection, 1, 80)
      bad("bad argument #1 to 'open_connection' (host contains a NUL byte)",
        lunio.open_connection, "a\0b", 80)
      bad("bad argument #2 to 'open_connection' (port out of range)",
        lunio.open_connection, "127.0.0.1", 0)
      bad("bad argument #2 to 'open_connection' (port out of range)",
        lunio.open_connection, "127.0.0.1", 70000)
      bad("bad argument #2 to 'open_connection' (port must be an integer, got 1.5)",
        lunio.open_connection, "127.0.0.1", 1.5)
      bad("bad argument #3 to 'open_connection' (table expected, got string)",
        lunio.open_connection, "127.0.0.1", 80, "x")
      bad("bad argument #3 to 'open_connection' (opts.timeout must be a number of seconds >= 0)",
        lunio.open_connection, "127.0.0.1", 80, { timeout = -1 })
      bad("bad argument #3 to 'open_connection' (opts.limit must be a positive integer)",
        lunio.open_connection, "127.0.0.1", 80, { limit = 0 })
      bad("bad argument #3 to 'open_connection' (opts.write_high_water must be an integer >= 0)",
        lunio.open_connection, "127.0.0.1", 80, { write_high_water = -5 })
      bad("bad argument #3 to 'open_connection' (unknown option 'tiemout')",
        lunio.open_connection, "127.0.0.1", 80, { tiemout = 1 })
      bad("bad argument #1 to 'start_server' (callable expected, got nil)",
        lunio.start_server, nil, "127.0.0.1", 0)
      bad("bad argument #2 to 'start_server' (string expected, got number)",
        lunio.start_server, fn, 1, 0)
      bad("bad argument #3 to 'start_server' (port out of range)",
        lunio.start_server, fn, "127.0.0.1", -1)
      bad("bad argument #4 to 'start_server' (opts.backlog must be an integer in 1..65535)",
        lunio.start_server, fn, "127.0.0.1", 0, { backlog = 0 })
      bad("bad argument #4 to 'start_server' (opts.reuseport must be a boolean)",
        lunio.start_server, fn, "127.0.0.1", 0, { reuseport = 1 })
      bad("bad argument #1 to 'open_unix_connection' (path contains a NUL byte)",
        lunio.open_unix_connection, "/tmp/a\0b")
      bad("bad argument #1 to 'open_unix_connection' (path is empty)",
        lunio.open_unix_connection, "")
      bad("bad argument #1 to 'open_unix_connection' (path too long",
        lunio.open_unix_connection, "/tmp/" .. string.rep("x", 200))
      bad("bad argument #2 to 'start_unix_server' (string expected, got nil)",
        lunio.start_unix_server, fn, nil)
      bad("bad argument #1 to 'start_unix_server' (callable expected, got string)",
        lunio.start_unix_server, "x", "/tmp/x.sock")
      bad("bad argument #2 to 'udp_bind' (port out of range)",
        lunio.udp_bind, "127.0.0.1", 65536)
      -- an integral float beyond the integers (found by the API fuzzer)
      bad("bad argument #2 to 'udp_bind' (port out of range)",
        lunio.udp_bind, "127.0.0.1", 1e300)
      bad("bad argument #2 to 'open_connection' (port out of range)",
        lunio.open_connection, "127.0.0.1", -1e300)
      bad("bad argument #3 to 'udp_bind' (opts.max_datagram must be a positive integer)",
        lunio.udp_bind, "127.0.0.1", 0, { max_datagram = 0 })

      local p <close> = pair()
      local server, c = p.server, p.c
      -- C methods, called as methods: the argument after self is #1
      bad("bad argument #1 to 'read' (size must not be negative)",
        function() return c:read(-1) end)
      bad("bad argument #1 to 'read' (number expected, got string)",
        function() return c:read("x") end)
      bad("bad argument #1 to 'read_exactly' (size must not be negative)",
        function() return c:read_exactly(-3) end)
      bad("bad argument #1 to 'read_exactly' (number expected, got no value)",
        function() return c:read_exactly() end)
      bad("bad argument #1 to 'read_until' (separator is empty)",
        function() return c:read_until("") end)
      bad("bad argument #1 to 'write' (string expected, got table)",
        function() return c:write({}) end)
      bad("bad argument #1 to 'set_nodelay' (value expected)",
        function() return c:set_nodelay() end)
      bad("bad argument #1 to 'read' (lunio.Stream expected, got table)",
        function() return c.read({}) end)
      bad("bad argument #1 to 'write' (lunio.Stream expected, got no value)",
        function() return c.write() end)
      local u <close> = lunio.udp_bind("127.0.0.1", 0)
      bad("bad argument #1 to 'send' (string expected, got nil)",
        function() return u:send(nil, "127.0.0.1", 1) end)
      bad("bad argument #3 to 'send' (port out of range)",
        function() return u:send("x", "127.0.0.1", 0) end)
      bad("bad argument #2 to 'send' (host contains a NUL byte)",
        function() return u:send("x", "a\0", 1) end)
      bad("bad argument #1 to 'close' (table expected, got string)",
        function() return server:close("x") end)
    end))

    it("outside a task say so", function()
      local msg = h.errmsg(lunio.open_connection, "127.0.0.1", 80)
      assert.matches("'open_connection' called outside a running task", msg, 1, true)
      msg = h.errmsg(lunio.start_server, function() end, "127.0.0.1", 0)
      assert.matches("'start_server' called outside a running task", msg, 1, true)
    end)
  end)

  describe("in child processes", function()
    it("a write to a vanished peer raises instead of killing the process (SIGPIPE)",
      function()
        local out, err, code = h.lua([[
local lunio = require "lunio"
lunio.run(function()
  local server = lunio.start_server(function(s) s:abort() end, "127.0.0.1", 0)
  local c = lunio.open_connection("127.0.0.1", server.port)
  lunio.sleep(0.05)
  local ok, e
  for _ = 1, 200 do
    ok, e = pcall(c.write, c, string.rep("x", 1 << 20))
    if not ok then break end
  end
  print(ok, e and e.kind)
  c:close(); server:close()
end)
print("alive")]])
        assert.are.equal(0, code, err)
        assert.matches("false\te[cp][oi][np]", out)
        assert.matches("alive", out)
      end)

    it("accepting survives EMFILE and resumes when descriptors free up", function()
      local stop = os.tmpname()
      os.remove(stop)
      local script = os.tmpname()
      local f = assert(io.open(script, "w"))
      f:write([[
local lunio = require "lunio"
lunio.run(function()
  local server = lunio.start_server(function(s)
    while true do
      local d = s:read()
      if not d then break end
      s:write(d)
    end
  end, "127.0.0.1", 0)
  io.write(server.port, "\n")
  io.flush()
  while not io.open(arg[1]) do lunio.sleep(0.02) end
  local accepted, errors = server:stats()
  io.stderr:write("accepted ", accepted, " errors ", errors, "\n")
  server:close({ abort = true })
end)
print("exit ok")
]])
      f:close()
      local errf = os.tmpname()
      local env = ("LUA_PATH=%s LUA_CPATH=%s"):format(h.shell_quote(h.absolute_path(package.path)),
        h.shell_quote(h.absolute_path(package.cpath)))
      -- 40 descriptors: the child runs out after some 30 connections
      local child = io.popen(("sh -c 'ulimit -n 40 && exec env %s lua5.4 %s %s' 2>%s"):format(
        (env:gsub("'", "'\\''")), script, stop, errf), "r")
      local port = tonumber(child:read("l"))
      assert(port, "the child did not start")
      local loop = lunio.new_loop()
      local ok, err = pcall(loop.run, loop, function()
        local clients = {}
        for _ = 1, 60 do
          local okc, c = pcall(lunio.open_connection, "127.0.0.1", port)
          if okc then clients[#clients + 1] = c end
        end
        -- the connections the server could not keep were accepted and
        -- closed by libuv's EMFILE trick: they end at once
        local alive = 0
        for _, c in ipairs(clients) do
          if lunio.pcall(function()
            local _ <close> = lunio.timeout(1)
            c:write("?")
            assert(c:read() == "?")
          end) then
            alive = alive + 1
          end
          c:close()
        end
        assert(alive > 0 and alive < 60, "alive: " .. alive)
        lunio.sleep(0.2)
        -- descriptors are free again: the server accepts and serves
        for _ = 1, 5 do
          local c <close> = lunio.open_connection("127.0.0.1", port)
          c:write("again")
          assert(c:read() == "again")
        end
      end)
      loop:close()
      io.open(stop, "w"):close()
      local rest = child:read("a")
      child:close()
      local ef = io.open(errf)
      local stderr = ef:read("a")
      ef:close()
      os.remove(script)
      os.remove(errf)
      os.remove(stop)
      assert(ok, tostring(err))
      assert.matches("exit ok", rest)
      assert.matches("^accepted %d+ errors %d+\n$", stderr)
    end)
  end)
end)
