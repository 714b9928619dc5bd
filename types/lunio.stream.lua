---@meta lunio.stream
-- LuaLS definitions of lunio's networking (`require "lunio.stream"`; the
-- functions are also `lunio.open_connection` ...). See docs/streams.md.

---Options of streams (open_connection, start_server and the unix ones).
---@class lunio.StreamOpts
---@field limit? integer bytes read_line/read_until may buffer (default 1 MiB)
---@field write_high_water? integer unsent bytes before write suspends (64 KiB)
---@field read_high_water? integer unread bytes before reading pauses

---A byte stream (TCP, Unix socket, pipe), `<close>`-able.
---@class lunio.Stream
local Stream = {}

---What has arrived, up to `n` bytes (default 64 KiB); nil at EOF.
---@async
---@param n? integer
---@return string?
function Stream:read(n) end

---Exactly `n` bytes; kind "eof" with `.partial` on an early EOF.
---@async
---@param n integer
---@return string
function Stream:read_exactly(n) end

---Up to and including `sep`; kind "limit" beyond the limit.
---@async
---@param sep string
---@return string?
function Stream:read_until(sep) end

---A line without its newline; nil at EOF.
---@async
---@return string?
function Stream:read_line() end

---@async
---@return fun(): string?
function Stream:lines() end

---Everything until EOF.
---@async
---@return string
function Stream:read_all() end

---Buffers `data`; suspends only above the write high-water mark.
---@async
---@param data string
function Stream:write(data) end

---Waits until everything written was sent.
---@async
function Stream:drain() end

---Half close: no more writes.
---@async
function Stream:shutdown() end

---Flushes what is queued, then closes (idempotent).
function Stream:close() end

---Closes at once (a TCP reset).
function Stream:abort() end

---@return boolean
function Stream:closed() end

---@return string host
---@return integer? port
function Stream:peername() end

---@return string host
---@return integer? port
function Stream:sockname() end

---@param on boolean
function Stream:set_nodelay(on) end

---Unread bytes, unsent bytes, whether reading is paused.
---@return integer, integer, boolean
function Stream:buffer_info() end

---A listening server, `<close>`-able (waits for its handlers).
---@class lunio.Server
---@field port integer? the port it listens on (TCP)
local Server = {}

---@return string host
---@return integer? port
function Server:sockname() end

---Every address it listens on.
---@return {[1]: string, [2]: integer?}[]
function Server:socknames() end

---Stops accepting; `{abort = true}` also closes the open connections.
---@param opts? {abort?: boolean}
function Server:close(opts) end

---@return boolean
function Server:is_serving() end

---Waits until the server is closed.
---@async
function Server:serve_forever() end

---Waits until it is closed and its handlers finished.
---@async
function Server:wait_closed() end

---Open connections.
---@return integer
function Server:connections() end

---@return integer accepted
---@return integer errors
function Server:stats() end

---A UDP socket, `<close>`-able.
---@class lunio.UDP
local UDP = {}

---Queues a datagram (never blocks for ever).
---@async
---@param data string
---@param host string
---@param port integer
function UDP:send(data, host, port) end

---The next datagram and its sender.
---@async
---@return string data
---@return string host
---@return integer port
function UDP:recv() end

---@return string host
---@return integer port
function UDP:sockname() end

function UDP:close() end

---@return boolean
function UDP:closed() end

---@class lunio.stream
local stream = {}

---A TCP connection to `host`:`port` (every address getaddrinfo gives is
---tried); `opts.timeout` bounds the whole connect.
---@async
---@param host string
---@param port integer
---@param opts? lunio.StreamOpts|{timeout?: number}
---@return lunio.Stream
function stream.open_connection(host, port, opts) end

---@async
---@param path string
---@param opts? lunio.StreamOpts|{timeout?: number}
---@return lunio.Stream
function stream.open_unix_connection(path, opts) end

---A TCP server: `handler(stream)` runs as a task per connection; port 0
---picks a free port.
---@param handler fun(stream: lunio.Stream)
---@param host string?
---@param port integer
---@param opts? lunio.StreamOpts|{backlog?: integer, reuseport?: boolean}
---@return lunio.Server
function stream.start_server(handler, host, port, opts) end

---@param handler fun(stream: lunio.Stream)
---@param path string
---@param opts? lunio.StreamOpts|{backlog?: integer}
---@return lunio.Server
function stream.start_unix_server(handler, path, opts) end

---@param host string?
---@param port integer
---@param opts? {max_datagram?: integer}
---@return lunio.UDP
function stream.udp_bind(host, port, opts) end

return stream
