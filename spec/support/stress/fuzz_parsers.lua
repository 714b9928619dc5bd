-- Byte-level fuzzer for the parsers lunio owns (started by spec/fuzz_spec.lua,
-- under ASan+UBSan in `make check-stress`; runs by hand too):
--
--   lua5.4 spec/support/stress/fuzz_parsers.lua CASES SEED RAW_URL [TRACE]
--
-- CASES below, each a named case:
--
-- http_headers: random response heads (status lines, header blocks with
--   odd names, values, line endings, folding, NULs, duplicates, huge and
--   many lines, 1xx responses, broken chunked bodies and encodings) sent
--   from a real socket: RAW_URL is spec/support/bad_server.py in "raw"
--   mode, which answers each request with its body, so the fuzzer POSTs
--   the response it wants back. Each fetch must give a Response whose
--   Headers hold together (get, get_all, has, list, pairs, #, tostring
--   agree, names match case-insensitively) or raise a documented kind.
--   Redirects are off: a Location never leads off loopback.
-- stream_lines: random lines (with NULs and CRs)
--   through a lunio server in random pieces, read back with read_line
--   under small `limit`s: every line comes back exactly (without its "\n"
--   or "\r\n"), or kind "limit" when its "\n" is not within `limit` bytes.
--
-- Prints "seed=S cases=N", per-case counts ("http_headers responses=
-- errors= ..."), then "ok"; raises on a broken invariant.
local S = require "support.stress"
local lunio = require "lunio"

local N = math.tointeger(tonumber(arg[1] or "")) or 2000
local SEED = math.tointeger(tonumber(arg[2] or "")) or 1
local RAW_URL = arg[3]
local TRACE = arg[4] or os.tmpname()
math.randomseed(SEED)
local random = math.random

local trace = assert(io.open(TRACE, "w"))
local function note(line)
  trace:seek("set")
  trace:write(line, (" "):rep(math.max(0, 120 - #line)), "\n")
  trace:flush()
end

local DOC_KINDS = {}
for _, k in ipairs(S.DOC_KINDS) do DOC_KINDS[k] = true end

local function bytes(n, alphabet)
  local t = {}
  for i = 1, n do
    if alphabet then
      local k = random(#alphabet)
      t[i] = alphabet:sub(k, k)
    else
      t[i] = string.char(random(0, 255))
    end
  end
  return table.concat(t)
end

local TOKEN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
local NAMES = { "Content-Type", "Content-Length", "Transfer-Encoding", "Content-Encoding",
  "Location", "Set-Cookie", "Connection", "X-Dup", "x-dup", "X-DUP", "Date", "ETag",
  "Retry-After", "Vary", "Trailer", "Keep-Alive", "Alt-Svc", "Strict-Transport-Security" }

local function header_name()
  local r = random(10)
  if r <= 4 then return NAMES[random(#NAMES)] end
  if r <= 7 then return bytes(random(1, 20), TOKEN) end
  if r == 8 then return "" end
  if r == 9 then return bytes(random(1, 8)) end -- any bytes
  return ("N"):rep(random(100, 20000))
end

local function header_value()
  local r = random(12)
  if r <= 4 then return bytes(random(0, 30), TOKEN .. " ;=,/\"") end
  if r == 5 then return tostring(random(-10, 1 << 20)) end
  if r == 6 then return "chunked" end
  if r == 7 then return ({ "gzip", "deflate", "br", "zstd", "identity", "gzip, br" })[random(6)] end
  if r == 8 then return bytes(random(0, 40)) end
  if r == 9 then return ("v"):rep(random(1000, 100000)) end
  if r == 10 then return "a\0b" end
  if r == 11 then return "http://127.0.0.1:9/" .. bytes(random(0, 10), TOKEN) end
  return ""
end

local EOLS = { "\n", "\r", "\r\r\n", "" }

local function eol()
  if random() < 0.93 then return "\r\n" end
  return EOLS[random(#EOLS)]
end

local function status_line()
  local r = random(12)
  local version = random() < 0.8 and "HTTP/1.1" or ({ "HTTP/1.0", "HTTP/2", "HTTP/0.9",
    "HTTP/1.12", "http/1.1", "HTTP/", "HTTP/9.9", "ICY" })[random(8)]
  local code = r <= 6 and ({ 200, 204, 206, 301, 304, 404, 500, 101, 100, 103 })[random(10)]
    or random(-5, 1200)
  local reason = random() < 0.8 and ({ "OK", "", "Not Found", bytes(random(0, 20)) })[random(4)]
    or ("R"):rep(random(100, 50000))
  if r == 12 and random() < 0.5 then return bytes(random(0, 40)) end
  if r == 11 then return version .. " " .. code end
  return version .. " " .. code .. " " .. reason
end

local function body_for(head_has)
  local r = random(8)
  if r == 1 then return "" end
  if r == 2 then return bytes(random(0, 200)) end
  if r == 3 then -- a chunked body, maybe broken
    local parts = {}
    for _ = 1, random(0, 4) do
      local data = bytes(random(0, 50))
      local size = random() < 0.8 and ("%x"):format(#data) or bytes(random(1, 6))
      parts[#parts + 1] = size .. (random() < 0.3 and ";ext=1" or "") .. "\r\n" .. data .. "\r\n"
    end
    if random() < 0.7 then
      parts[#parts + 1] = "0\r\n" .. (random() < 0.3 and "X-Trailer: t\r\n" or "") .. "\r\n"
    end
    return table.concat(parts)
  end
  if r == 4 then return ("b"):rep(random(1000, 300000)) end
  if r == 5 and head_has then return "\31\139\8\0" .. bytes(random(0, 30)) end -- a broken gzip
  return "body " .. bytes(random(0, 20), TOKEN)
end

-- One random response, as bytes.
local function response()
  local lines = {}
  if random() < 0.1 then -- informational responses first
    for _ = 1, random(1, 3) do
      lines[#lines + 1] = "HTTP/1.1 1" .. ("%02d"):format(random(0, 3)) .. " Info\r\n"
      if random() < 0.5 then lines[#lines + 1] = "X-Info: 1\r\n" end
      lines[#lines + 1] = "\r\n"
    end
  end
  lines[#lines + 1] = status_line() .. eol()
  local nheaders = random() < 0.05 and random(500, 3000) or random(0, 12)
  local has_encoding = false
  for _ = 1, nheaders do
    local name, value = header_name(), header_value()
    if name == "Content-Encoding" then has_encoding = true end
    local r = random(40)
    if r == 1 then
      lines[#lines + 1] = name .. eol() -- no colon
    elseif r == 2 then
      lines[#lines + 1] = " " .. value .. "\r\n" -- an obs-fold continuation
    elseif r == 3 then
      lines[#lines + 1] = name .. " : " .. value .. "\r\n" -- space before the colon
    else
      lines[#lines + 1] = name .. ":" .. (random() < 0.8 and " " or "") .. value .. eol()
    end
  end
  if random() < 0.9 then lines[#lines + 1] = "\r\n" end
  lines[#lines + 1] = body_for(has_encoding)
  local raw = table.concat(lines)
  if random() < 0.05 then raw = raw:sub(1, random(0, #raw)) end -- cut anywhere
  return raw
end

-- The input in flight, kept in TRACE.input: after a crash, it is there.
local function keep(raw)
  local f = io.open(TRACE .. ".input", "wb")
  if f then
    f:write(raw)
    f:close()
  end
end

local function check(cond, what, raw)
  if not cond then
    local f = io.open(TRACE .. ".response", "wb")
    if f then
      f:write(raw)
      f:close()
    end
    error(("invariant broken: %s (the response is in %s.response)"):format(what, TRACE), 0)
  end
end

-- Names that index a Headers object's methods rather than a header.
local HEADER_METHODS = { get = true, get_all = true, has = true, list = true }

-- The Headers object agrees with itself.
local function check_headers(hs, raw)
  local list = hs:list()
  check(#hs == #list, "#headers == #headers:list()", raw)
  local i = 0
  for name, value in pairs(hs) do
    i = i + 1
    check(type(name) == "string" and type(value) == "string", "pairs gives strings", raw)
    check(list[i][1] == name and list[i][2] == value, "pairs follows list()", raw)
  end
  check(i == #list, "pairs visits every line", raw)
  local s = tostring(hs)
  check(type(s) == "string", "tostring", raw)
  for _, pair in ipairs(list) do
    local name = pair[1]
    local all = hs:get_all(name)
    check(#all >= 1, "get_all finds a listed name", raw)
    check(hs:get(name) == table.concat(all, ", "), "get joins get_all", raw)
    check(hs:get(name:upper()) == hs:get(name) and hs:get(name:lower()) == hs:get(name),
      "names match whatever their case", raw)
    check(hs:has(name), "has a listed name", raw)
    check(hs[name] == hs:get(name) or HEADER_METHODS[name], "indexing is get", raw)
  end
  check(hs:get("x-not-there-" .. random(1e6)) == nil, "an absent name is nil", raw)
end

local counts = {}

local CASES = {
  {
    name = "http_headers",
    run = function(n)
      if not RAW_URL then
        S.line("http_headers: skipped (no RAW_URL argument)")
        return
      end
      local c = { responses = 0, errors = 0, streamed = 0 }
      counts.http_headers = c
      local kinds = {}
      lunio.run(function()
        local s <close> = lunio.http.Session({ redirects = 0, timeout = 10, idle_timeout = 2,
          max_body_size = 1 << 20, max_connections = 8 })
        for i = 1, n do
          local raw = response()
          local stream = random() < 0.3
          note(("%d http_headers bytes=%d stream=%s"):format(i, #raw, tostring(stream)))
          keep(raw)
          local ok, resp = pcall(s.post, s, RAW_URL, { body = raw, stream = stream,
            decompress = random() < 0.5 })
          if ok and stream then
            local ok2, err = pcall(resp.text, resp)
            c.streamed = c.streamed + 1
            if not ok2 then ok, resp = false, err end
          end
          if ok then
            c.responses = c.responses + 1
            check(math.type(resp.status) == "integer", "status is an integer", raw)
            check(type(resp.reason) == "string", "reason is a string", raw)
            check(type(resp.body) == "string", "body is a string", raw)
            check_headers(resp.headers, raw)
          else
            c.errors = c.errors + 1
            local err = resp
            check(lunio.is_error(err) and DOC_KINDS[err.kind] ~= nil,
              "a documented kind, not " .. tostring(err), raw)
            kinds[err.kind] = (kinds[err.kind] or 0) + 1
          end
        end
      end)
      for k, v in pairs(kinds) do c["kind_" .. k] = v end
    end,
  },
  {
    name = "stream_lines",
    run = function(n)
      local c = { lines = 0, limits = 0 }
      counts.stream_lines = c
      lunio.run(function()
        for i = 1, n // 10 do
          local limit = random(1, 64)
          local parts, data = {}, {}
          for _ = 1, random(1, 20) do
            local line = bytes(random(0, 80), "ab\0\r")
            parts[#parts + 1] = line
            data[#data + 1] = line .. "\n"
          end
          local payload = table.concat(data)
          note(("%d stream_lines limit=%d bytes=%d"):format(i, limit, #payload))
          local server <close> = lunio.start_server(function(st)
            local pos = 1
            while pos <= #payload do -- random chunk sizes
              local k = random(1, 17)
              st:write(payload:sub(pos, pos + k - 1))
              pos = pos + k
              if random() < 0.2 then lunio.sleep(0) end
            end
            st:shutdown()
          end, "127.0.0.1", 0, { limit = limit })
          local st <close> = lunio.open_connection("127.0.0.1", server.port, { limit = limit })
          local got = 1
          while true do
            local ok, line = pcall(st.read_line, st)
            if not ok then
              check(lunio.is_error(line, "limit"), "read_line raises kind limit, not "
                .. tostring(line), payload)
              -- only when "\n" is not within `limit` bytes
              check(#parts[got] + 1 > limit, "limit only for a line over the limit", payload)
              c.limits = c.limits + 1
              break
            end
            if line == nil then break end
            -- without its "\n" or "\r\n"
            check(line == parts[got]:gsub("\r$", ""), "read_line returns the line sent", payload)
            got = got + 1
            c.lines = c.lines + 1
          end
        end
      end)
    end,
  },
}

S.line(("seed=%d cases=%d"):format(SEED, N))
for _, case in ipairs(CASES) do
  case.run(N)
  if counts[case.name] then S.line(case.name, counts[case.name]) end
end
trace:close()
S.line("ok")
