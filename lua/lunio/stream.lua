--- lunio.stream: TCP, Unix-socket and UDP networking on the loop, in the
--- style of asyncio's streams.
--
--   local lunio = require "lunio"
--   local server = lunio.start_server(function(stream)
--     for line in stream:lines() do stream:write(line .. "\n") end
--   end, "127.0.0.1", 0)
--   local s <close> = lunio.open_connection("127.0.0.1", server.port)
--
-- The byte streams themselves (lunio.Stream: read, write, flow control,
-- cancellation) live in C (src/stream.c); this file owns the policies:
-- argument checking, name resolution, trying each address in turn,
-- connect timeouts, and the Server (one handler task per connection).
-- It must not require "lunio" at load time (lunio's init.lua loads it
-- lazily); `require "lunio.stream"` works on its own.
local core = require "lunio.core"
local util = require "lunio.util"

local C = core.stream
local tcp_connect, pipe_connect = C.tcp_connect, C.pipe_connect
local tcp_listen, pipe_listen, udp_bind = C.tcp_listen, C.pipe_listen, C.udp_bind
local is_ip, report = C.is_ip, C.report
local spawn, current, Future = core.spawn, core.current, core.Future
local new_error, is_error = core.new_error, core.is_error
local getaddrinfo = core.getaddrinfo
local is_callable, running_task = util.is_callable, util.running_task

local type, error, pcall, xpcall, ipairs, pairs = type, error, pcall, xpcall, ipairs, pairs
local setmetatable, tostring, select = setmetatable, tostring, select
local math_type, traceback, concat = math.type, debug.traceback, table.concat

local M = {}

-- Name resolution of open_connection, looked up at each call: a seam for
-- the specs (no name on a test machine need resolve to both an IPv6 and an
-- IPv4 loopback address), kept off the public module.
C.resolve = C.resolve or getaddrinfo

-- The C types, for LuaLS (docs/streams.md has the full semantics). Methods
-- that wait are async: call them from a task.

---A connected byte stream (TCP or Unix socket).
---@class lunio.Stream
---Up to n bytes (default 64 KiB) as soon as any arrived; nil at EOF.
---@field read fun(self: lunio.Stream, n?: integer): string?
---Exactly n bytes; kind "eof" with `.partial` if the stream ends first.
---@field read_exactly fun(self: lunio.Stream, n: integer): string
---Up to and including sep; nil at EOF; kinds "eof" (`.partial`), "limit".
---@field read_until fun(self: lunio.Stream, sep: string): string?
---The next line without "\n" or "\r\n"; a last unterminated line; nil.
---@field read_line fun(self: lunio.Stream): string?
---An iterator of read_line for a generic for.
---@field lines fun(self: lunio.Stream): (fun(): string?)
---Everything up to EOF.
---@field read_all fun(self: lunio.Stream): string
---Buffers data; waits only while the unsent amount is above the mark.
---@field write fun(self: lunio.Stream, data: string)
---Waits until every byte written went to the kernel.
---@field drain fun(self: lunio.Stream)
---Half close: flushes, sends FIN, waits for it; reading goes on.
---@field shutdown fun(self: lunio.Stream)
---Idempotent; queued writes are still sent.
---@field close fun(self: lunio.Stream)
---Closes at once, dropping queued writes (TCP: a reset).
---@field abort fun(self: lunio.Stream)
---@field closed fun(self: lunio.Stream): boolean
---Host and port of the peer (Unix sockets: path, nil).
---@field peername fun(self: lunio.Stream): string, integer?
---@field sockname fun(self: lunio.Stream): string, integer?
---TCP_NODELAY (on by default).
---@field set_nodelay fun(self: lunio.Stream, on: boolean)
---Unread bytes, unsent bytes, whether it reads from the kernel now.
---@field buffer_info fun(self: lunio.Stream): integer, integer, boolean

---A bound UDP socket.
---@class lunio.UDP
---Never waits for the socket: queues (up to 1 MiB) or raises.
---@field send fun(self: lunio.UDP, data: string, host: string, port: integer)
---The next datagram: data, host, port.
---@field recv fun(self: lunio.UDP): string, string, integer
---@field sockname fun(self: lunio.UDP): string, integer
---@field close fun(self: lunio.UDP)
---@field closed fun(self: lunio.UDP): boolean

---@class lunio.StreamOpts
---Bytes read_line/read_until may buffer for a separator (default 1 MiB).
---@field limit? integer
---write() waits while more than this is unsent (default 64 KiB).
---@field write_high_water? integer
---Reading pauses while more than this is unread (default 64 KiB).
---@field read_high_water? integer

-- ---------------------------------------------------------------------------
-- argument checks

local arg_error = util.arg_error

local function check_host(host, n, fname, optional)
  if host == nil and optional then return nil end
  if type(host) ~= "string" then
    arg_error(n, fname, "string expected, got " .. type(host))
  end
  if host:find("\0", 1, true) then arg_error(n, fname, "host contains a NUL byte") end
  if host == "" and not optional then arg_error(n, fname, "host is empty") end
  return host
end

local function check_port(port, n, fname, zero_ok)
  if math_type(port) ~= "integer" then
    if type(port) == "number" and port == port and port % 1 == 0 then
      -- nil for an integral float beyond the integers (1e300): out of range
      port = math.tointeger(port) or -1
    else
      arg_error(n, fname, "port must be an integer, got " .. (type(port) == "number"
        and tostring(port) or type(port)))
    end
  end
  if port < (zero_ok and 0 or 1) or port > 65535 then
    arg_error(n, fname, "port out of range")
  end
  return port
end

local function check_path(path, n, fname)
  if type(path) ~= "string" then
    arg_error(n, fname, "string expected, got " .. type(path))
  end
  if path == "" then arg_error(n, fname, "path is empty") end
  if path:find("\0", 1, true) then arg_error(n, fname, "path contains a NUL byte") end
  if #path >= 108 then
    arg_error(n, fname, "path too long for a Unix socket (107 bytes at most)")
  end
  return path
end

local EMPTY = {}

-- The options each function knows, and how to check each.
local function positive_integer(v) return math_type(v) == "integer" and v > 0 end
local function size(v) return math_type(v) == "integer" and v >= 0 end
local seconds = util.is_seconds
local checks = {
  limit = { positive_integer, "a positive integer" },
  write_high_water = { size, "an integer >= 0" },
  read_high_water = { positive_integer, "a positive integer" },
  timeout = { seconds, "a number of seconds >= 0" },
  backlog = {
    function(v) return math_type(v) == "integer" and v > 0 and v <= 65535 end,
    "an integer in 1..65535",
  },
  reuseport = { function(v) return type(v) == "boolean" end, "a boolean" },
  max_datagram = { positive_integer, "a positive integer" },
}

local function check_opts(opts, n, fname, known)
  if opts == nil then return EMPTY end
  if type(opts) ~= "table" then
    arg_error(n, fname, "table expected, got " .. type(opts))
  end
  for k, v in pairs(opts) do
    if not known[k] then
      arg_error(n, fname, "unknown option '" .. tostring(k) .. "'")
    end
    local check = checks[k]
    if not check[1](v) then
      arg_error(n, fname, ("opts.%s must be %s"):format(k, check[2]))
    end
  end
  return opts
end

local CONNECT_OPTS = { limit = true, write_high_water = true, read_high_water = true,
  timeout = true }
local SERVER_OPTS = { limit = true, write_high_water = true, read_high_water = true,
  backlog = true, reuseport = true }
local UNIX_SERVER_OPTS = { limit = true, write_high_water = true, read_high_water = true,
  backlog = true }
local UDP_OPTS = { max_datagram = true }

-- ---------------------------------------------------------------------------
-- connecting

-- Runs fn(...) under a timeout scope of `secs` (nil: none); a timeout is
-- raised as kind "timeout" naming `what`.
local function with_timeout(secs, what, fn, ...)
  if secs == nil then return fn(...) end
  local ok, res = pcall(util.within, secs, fn, ...)
  if ok then return res end
  if is_error(res, "timeout") then
    res.message = ("%s timed out after %g s"):format(what, secs)
  end
  error(res, 0)
end

local function message_of(err)
  local msg = is_error(err) and err.message or tostring(err)
  return (msg:gsub("^connect: ", ""))
end

-- Tries every address of host in the order getaddrinfo gives them.
local function connect_tcp(host, port, opts)
  local addrs
  if is_ip(host) then
    addrs = { { address = host } }
  else
    addrs = C.resolve(host, port, "any", "stream")
  end
  local errors = {}
  for i = 1, #addrs do
    local ok, s = pcall(tcp_connect, addrs[i].address, port, opts.limit,
      opts.write_high_water, opts.read_high_water)
    if ok then return s end
    if is_error(s, "cancelled") then error(s, 0) end
    errors[#errors + 1] = s
  end
  local last = errors[#errors]
  local msg
  if #errors == 1 then
    msg = message_of(last)
  elseif #errors == 0 then
    msg = "the name has no address"
  else
    local parts = {}
    for i, e in ipairs(errors) do
      parts[i] = addrs[i].address .. ": " .. message_of(e)
    end
    msg = concat(parts, "; ")
  end
  local err = new_error(last and last.kind or "eai_noname",
    ("cannot connect to %s port %d: %s"):format(host, port, msg))
  err.host, err.port, err.errors = host, port, errors
  err.code = last and last.code
  error(err, 0)
end

---Opens a TCP connection: resolves `host` (IPv4 and IPv6) and tries each
---address until one connects. `opts.timeout` bounds the whole attempt
---(kind "timeout"); failures raise the libuv error kind ("econnrefused",
---...) with `.host`, `.port` and `.errors` (one per address tried).
---@async
---@param host string
---@param port integer
---@param opts? lunio.StreamOpts|{timeout?: number}
---@return lunio.Stream
function M.open_connection(host, port, opts)
  check_host(host, 1, "open_connection")
  port = check_port(port, 2, "open_connection")
  opts = check_opts(opts, 3, "open_connection", CONNECT_OPTS)
  running_task("open_connection")
  return with_timeout(opts.timeout, ("connecting to %s port %d"):format(host, port),
    connect_tcp, host, port, opts)
end

---Opens a connection to the Unix socket at `path`.
---@async
---@param path string
---@param opts? lunio.StreamOpts|{timeout?: number}
---@return lunio.Stream
function M.open_unix_connection(path, opts)
  check_path(path, 1, "open_unix_connection")
  opts = check_opts(opts, 2, "open_unix_connection", CONNECT_OPTS)
  running_task("open_unix_connection")
  local ok, res = pcall(with_timeout, opts.timeout, "connecting to " .. path, pipe_connect,
    path, opts.limit, opts.write_high_water, opts.read_high_water)
  if ok then return res end
  if is_error(res) and not is_error(res, "cancelled") then res.path = path end
  error(res, 0)
end

-- ---------------------------------------------------------------------------
-- servers

---@class lunio.Server
---@field port integer? the port it listens on (TCP)
local Server = {}
local ServerMT = { __index = Server, __name = "lunio.Server" }

local function resolve_waiters(list)
  for i = 1, #list do
    local f = list[i]
    if not f:done() then f:set_result(true) end
  end
end

local function after_connection(server)
  if server._closed and server._n == 0 then
    local list = server._closed_waiters
    server._closed_waiters = {}
    resolve_waiters(list)
  end
end

-- A connection ends: its handler returned or raised, or its task was
-- cancelled before it ran (then only the done callback sees it).
local function forget(server, stream)
  local task = server._conns[stream]
  if task == nil then return end
  server._conns[stream] = nil
  local cb = server._done_cbs[stream]
  server._done_cbs[stream] = nil
  if cb and not task:done() then task:remove_done_callback(cb) end
  server._n = server._n - 1
  stream:close()
  after_connection(server)
end

-- The body of each connection's task: the handler, then close.
local function serve_connection(server, stream)
  local tb
  local ok, err = xpcall(server._handler, function(e)
    if not is_error(e, "cancelled") then tb = traceback(nil, 2) end
    return e
  end, stream)
  forget(server, stream)
  if not ok then
    if is_error(err, "cancelled") then error(err, 0) end
    report({
      message = "error in the connection handler of " .. tostring(server),
      error = err,
      traceback = tb,
      task = current(),
      server = server,
    })
  end
end

-- Called by the C listener (in Lua context, outside tasks) for each
-- accepted connection.
local function accept(server, stream)
  if server._closed then return stream:abort() end
  local task = spawn(serve_connection, server, stream)
  server._n = server._n + 1
  server._conns[stream] = task
  local cb = function() forget(server, stream) end
  server._done_cbs[stream] = cb
  task:add_done_callback(cb)
end

local function new_server(handler)
  local server = setmetatable({
    _handler = handler,
    _listeners = {},
    _conns = {}, -- stream -> its handler's task
    _done_cbs = {}, -- stream -> the done callback of that task
    _n = 0,
    _closed = false,
    _waiters = {}, -- serve_forever
    _closed_waiters = {}, -- wait_closed
  }, ServerMT)
  server._accept = function(stream) return accept(server, stream) end
  return server
end

-- The addresses to listen on for `host` (nil or "" or "*": every
-- interface, IPv4 and IPv6 apart).
local function listen_addresses(host, port)
  if host == nil or host == "" or host == "*" then
    return { "0.0.0.0", "::" }, true
  end
  if is_ip(host) then return { host }, false end
  local list, seen, families = {}, {}, {}
  for _, a in ipairs(getaddrinfo(host, port, "any", "stream")) do
    if not seen[a.address] then
      seen[a.address] = true
      list[#list + 1] = a.address
      families[a.family] = true
    end
  end
  return list, families.inet and families.inet6
end

---Starts a TCP server: `handler(stream)` runs as a new task for each
---connection and the stream is closed when it returns or raises (the error
---goes to the loop's exception handler). `host` nil listens on every
---interface; port 0 picks a free port (`server.port`). opts: `backlog`,
---`reuseport`, and the stream options.
---@async
---@param handler fun(stream: lunio.Stream)
---@param host string?
---@param port integer
---@param opts? lunio.StreamOpts|{backlog?: integer, reuseport?: boolean}
---@return lunio.Server
function M.start_server(handler, host, port, opts)
  if not is_callable(handler) then
    arg_error(1, "start_server", "callable expected, got " .. type(handler))
  end
  check_host(host, 2, "start_server", true)
  port = check_port(port, 3, "start_server", true)
  opts = check_opts(opts, 4, "start_server", SERVER_OPTS)
  running_task("start_server")
  local server = new_server(handler)
  local addrs, v6only = listen_addresses(host, port)
  local bound = port
  for i, addr in ipairs(addrs) do
    local ok, l = pcall(tcp_listen, addr, bound, server._accept, opts.backlog,
      opts.reuseport, v6only and is_ip(addr) == "inet6", opts.limit,
      opts.write_high_water, opts.read_high_water)
    if ok then
      server._listeners[#server._listeners + 1] = l
      if bound == 0 then bound = select(2, l:sockname()) end
    elseif not (host == nil and i > 1 and is_error(l)
        and (l.kind == "eafnosupport" or l.kind == "eaddrnotavail")) then
      -- (a machine without IPv6 still serves IPv4 on "every interface")
      server:close()
      if is_error(l) then
        l.host, l.port = l.host or addr, l.port or bound
      end
      error(l, 0)
    end
  end
  server.port = bound
  return server
end

---Starts a server on the Unix socket `path` (a socket file left there by
---an earlier server is replaced; the file is removed at close).
---@async
---@param handler fun(stream: lunio.Stream)
---@param path string
---@param opts? lunio.StreamOpts|{backlog?: integer}
---@return lunio.Server
function M.start_unix_server(handler, path, opts)
  if not is_callable(handler) then
    arg_error(1, "start_unix_server", "callable expected, got " .. type(handler))
  end
  check_path(path, 2, "start_unix_server")
  opts = check_opts(opts, 3, "start_unix_server", UNIX_SERVER_OPTS)
  running_task("start_unix_server")
  local server = new_server(handler)
  server._listeners[1] = pipe_listen(path, server._accept, opts.backlog, opts.limit,
    opts.write_high_water, opts.read_high_water)
  server.path = path
  return server
end

---The address of the (first) listening socket: host, port (Unix: path, nil).
---@return string, integer?
function Server:sockname()
  local l = self._listeners[1]
  if not l or l:closed() then error(new_error("closed", "the server is closed"), 2) end
  return l:sockname()
end

---The addresses of every listening socket: a list of {host, port}.
---@return {[1]: string, [2]: integer?}[]
function Server:socknames()
  local out = {}
  for i, l in ipairs(self._listeners) do
    if not l:closed() then out[i] = { l:sockname() } end
  end
  return out
end

---Stops accepting. With `{abort = true}` also aborts every open
---connection and cancels its handler. Idempotent.
---@param opts? {abort?: boolean}
function Server:close(opts)
  if opts ~= nil and type(opts) ~= "table" then
    arg_error(1, "close", "table expected, got " .. type(opts))
  end
  if not self._closed then
    self._closed = true
    for _, l in ipairs(self._listeners) do l:close() end
    local list = self._waiters
    self._waiters = {}
    resolve_waiters(list)
  end
  if opts and opts.abort then
    for stream, task in pairs(self._conns) do
      stream:abort()
      task:cancel("the server was closed")
    end
  end
  after_connection(self)
end

-- `local server <close> = ...` works like asyncio's `async with server`:
-- at the end of the block the server stops accepting and the block waits
-- for the connection handlers to finish (not when it exits with an error:
-- unwinding cannot wait).
function ServerMT:__close(err)
  self:close()
  if err == nil and current() then self:wait_closed() end
end

---Whether the server still accepts connections.
---@return boolean
function Server:is_serving()
  return not self._closed
end

---Waits until the server is closed (by another task, or by cancelling
---this one, which closes it).
---@async
function Server:serve_forever()
  if self._closed then return end
  local f = Future()
  self._waiters[#self._waiters + 1] = f
  local ok, err = pcall(f.await, f)
  if not ok then
    self:close()
    error(err, 0)
  end
end

---Waits until the server is closed and every connection handler finished.
---@async
function Server:wait_closed()
  if self._closed and self._n == 0 then return end
  local f = Future()
  self._closed_waiters[#self._closed_waiters + 1] = f
  f:await()
end

---The number of open connections (handlers still running).
---@return integer
function Server:connections()
  return self._n
end

---Connections accepted and accept errors (EMFILE ...) since the start.
---@return integer accepted, integer errors
function Server:stats()
  local accepted, errors = 0, 0
  for _, l in ipairs(self._listeners) do
    local a, e = l:stats()
    accepted, errors = accepted + a, errors + e
  end
  return accepted, errors
end

function ServerMT:__tostring()
  local where = self.path or ("port " .. tostring(self.port))
  return ("lunio.Server<%s, %s, %d connection%s>"):format(where,
    self._closed and "closed" or "serving", self._n, self._n == 1 and "" or "s")
end

-- ---------------------------------------------------------------------------
-- UDP

local function resolve_dgram(host, port)
  if is_ip(host) then return host end
  local list = getaddrinfo(host, port, "any", "dgram")
  if not list[1] then
    local err = new_error("eai_noname", "cannot resolve '" .. host .. "'")
    err.host = host
    error(err, 0)
  end
  return list[1].address
end

local UDP = C.methods.UDP
local raw_send = UDP.send

---Sends one datagram to host:port (a name is resolved first). Never waits
---for the socket: what it cannot take now is queued, up to 1 MiB, beyond
---which kind "enobufs" is raised.
---@param data string
---@param host string
---@param port integer
function UDP.send(self, data, host, port)
  if type(data) ~= "string" then
    arg_error(1, "send", "string expected, got " .. type(data))
  end
  check_host(host, 2, "send")
  port = check_port(port, 3, "send")
  if not is_ip(host) then
    running_task("send")
    host = resolve_dgram(host, port)
  end
  return raw_send(self, data, host, port)
end

---Binds a UDP socket to host:port (port 0: a free one). `opts.max_datagram`
---(default 65536) is the receive buffer; a longer datagram raises kind
---"emsgsize" with `.partial` instead of arriving cut short.
---@async
---@param host string?
---@param port integer
---@param opts? {max_datagram?: integer}
---@return lunio.UDP
function M.udp_bind(host, port, opts)
  check_host(host, 1, "udp_bind", true)
  port = check_port(port, 2, "udp_bind", true)
  opts = check_opts(opts, 3, "udp_bind", UDP_OPTS)
  running_task("udp_bind")
  if host == nil or host == "" or host == "*" then host = "0.0.0.0" end
  return udp_bind(resolve_dgram(host, port), port, opts.max_datagram)
end

return M
