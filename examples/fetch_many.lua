-- Fetch many URLs concurrently with a limit, showing a live progress line
-- on stderr and a summary at the end.
--
--   lua5.4 examples/fetch_many.lua [options] URL...
--   lua5.4 examples/fetch_many.lua [options] --base URL --path /small.txt -n 2000
--   lua5.4 examples/fetch_many.lua --base URL --path /a:100 --path /b:5
--
-- options:
--   -c N           at most N requests in flight (default 64)
--   -n N           with --base: number of requests of --path (default 100)
--   --base URL     base URL for generated requests
--   --path P[:N]   path to fetch N times (repeatable; N defaults to -n)
--   --http2        use HTTP/2 with prior knowledge (h2c)
--   --quiet        no progress line
--
-- Uses one Session (connection pool, keep-alive) and `limit` worker tasks
-- that take the next URL from a shared index (a task per URL plus a
-- Semaphore works too, but costs a task per request); the progress line is
-- redrawn by its own task every 100 ms.
local lunio = require "lunio"
local http = lunio.http

local function usage(msg)
  if msg then io.stderr:write("fetch_many: ", msg, "\n") end
  io.stderr:write("usage: fetch_many.lua [-c N] [-n N] [--base URL "
    .. "--path P ...] [--http2] [--quiet] [URL...]\n")
  os.exit(2)
end

local function parse_args(argv)
  local o = { limit = 64, count = 100, paths = {}, urls = {} }
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local function value()
      i = i + 1
      if argv[i] == nil then usage("missing value for " .. a) end
      return argv[i]
    end
    if a == "-c" then o.limit = tonumber(value()) or usage("bad -c")
    elseif a == "-n" then o.count = tonumber(value()) or usage("bad -n")
    elseif a == "--base" then o.base = value()
    elseif a == "--path" then o.paths[#o.paths + 1] = value()
    elseif a == "--http2" then o.http2 = true
    elseif a == "--quiet" then o.quiet = true
    elseif a == "-h" or a == "--help" then usage()
    elseif a:sub(1, 1) == "-" then usage("unknown option " .. a)
    else o.urls[#o.urls + 1] = a end
    i = i + 1
  end
  if o.base then
    if #o.paths == 0 then o.paths = { "/" } end
    for _, p in ipairs(o.paths) do
      local path, n = p:match("^(.*):(%d+)$")
      path, n = path or p, tonumber(n) or o.count
      for _ = 1, n do o.urls[#o.urls + 1] = o.base .. path end
    end
  end
  if #o.urls == 0 then usage("no URLs") end
  return o
end

local function human(bytes)
  local units, i = { "B", "KiB", "MiB", "GiB" }, 1
  while bytes >= 1024 and i < #units do
    bytes = bytes / 1024
    i = i + 1
  end
  return string.format(i == 1 and "%d %s" or "%.1f %s", bytes, units[i])
end

local function main(o)
  local session <close> = http.Session({
    max_connections = o.limit,
    http_version = o.http2 and "2-prior-knowledge" or nil,
  })
  local st = { done = 0, failed = 0, bytes = 0, statuses = {} }
  local total = #o.urls
  local t0 = lunio.now()

  local function line()
    local dt = lunio.now() - t0
    return string.format("%d/%d done, %d failed, %s, %.0f req/s",
      st.done, total, st.failed, human(st.bytes),
      dt > 0 and st.done / dt or 0)
  end

  local progress
  if not o.quiet then
    progress = lunio.create_task(function()
      while true do
        io.stderr:write("\r\27[K", line())
        io.stderr:flush()
        lunio.sleep(0.1)
      end
    end)
  end

  local function fetch_one(url)
    local ok, resp = lunio.pcall(session.get, session, url) -- lets cancellation through
    if ok then
      st.bytes = st.bytes + #resp.body
      st.statuses[resp.status] = (st.statuses[resp.status] or 0) + 1
    else
      st.failed = st.failed + 1
      st.last_error = resp
    end
    st.done = st.done + 1
  end

  local next_index = 0
  local function worker()
    while next_index < total do
      next_index = next_index + 1
      fetch_one(o.urls[next_index])
    end
  end
  local workers = {}
  for i = 1, math.min(o.limit, total) do
    workers[i] = lunio.create_task(worker)
  end
  lunio.gather(workers)
  local elapsed = lunio.now() - t0
  if progress then
    progress:cancel()
    io.stderr:write("\r\27[K", line(), "\n")
  end

  local codes = {}
  for code, n in pairs(st.statuses) do codes[#codes + 1] = code .. ": " .. n end
  table.sort(codes)
  print(string.format("requests: %d (%d failed)", st.done, st.failed))
  print("statuses: " .. (#codes > 0 and table.concat(codes, ", ") or "-"))
  print(string.format("bytes:    %d (%s)", st.bytes, human(st.bytes)))
  print(string.format("time:     %.3f s", elapsed))
  print(string.format("rate:     %.0f req/s, %s/s", st.done / elapsed,
    human(st.bytes / elapsed)))
  if st.last_error then print("last error: " .. tostring(st.last_error)) end
  return st.failed == 0
end

local ok, result = lunio.pcall(lunio.run, main, parse_args(arg or {}))
if not ok then
  -- a lunio error prints as "kind: message" plus a traceback; keep the first
  local msg = lunio.is_error(result) and (result.kind .. ": " .. result.message)
    or tostring(result)
  io.stderr:write("fetch_many: ", msg, "\n")
  os.exit(1)
end
os.exit(result and 0 or 1)
