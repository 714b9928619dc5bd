--- lunio.http: an asyncio-style HTTP client on libcurl.
--
--   local http = require "lunio.http"          -- or require("lunio").http
--   local resp = http.get("https://example.org/", { timeout = 10 })
--   print(resp.status, resp.headers:get("content-type"), #resp.body)
--
-- Every request runs on the loop of the calling task (C side: src/http.c,
-- libcurl's multi_socket API on libuv). Module-level functions use one
-- shared Session per loop; `http.Session(opts)` makes a separate one with
-- its own connection pool, cookie jar and defaults.
--
-- This file owns the policy: option checking, header merging, query/form/
-- JSON encoding, Response and Headers objects. It must not require "lunio"
-- at load time (lunio's init.lua loads it lazily).
local core = require "lunio.core"

local C = core.http

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local setmetatable, getmetatable, error, pcall = setmetatable, getmetatable, error, pcall
local format, concat, sort = string.format, table.concat, table.sort
local math_type = math.type

local M = {}

M.version = core.version
M.curl_version = core.libcurl_version

local USER_AGENT = "lunio/" .. tostring(core.version or "0")
  .. " libcurl/" .. tostring(core.libcurl_version or "?")

-- ---------------------------------------------------------------------------
-- small helpers

local is_callable = require("lunio.util").is_callable

-- Argument errors are raised inside prepare() as marked tables, then turned
-- into "bad argument #n to 'f' (...)" at the public entry point, where the
-- argument positions are known.
local ArgError = {}

local function argerror(which, msg)
  error(setmetatable({ which = which, msg = msg }, ArgError), 0)
end

local cjson
local function need_cjson(what)
  if cjson == nil then
    local ok, mod = pcall(require, "cjson")
    cjson = ok and mod or false
  end
  if not cjson then
    error("lunio.http: " .. what .. " needs lua-cjson, which is not "
      .. "installed (apt install lua-cjson, or luarocks install lua-cjson)", 3)
  end
  return cjson
end

local function lunio_error(kind, msg, fields)
  local err = C.error(kind, msg)
  if fields then
    for k, v in pairs(fields) do err[k] = v end
  end
  return err
end

-- RFC 3986 unreserved characters stay; everything else is %XX. Forms use
-- "+" for spaces (application/x-www-form-urlencoded).
local function urlencode(s, form)
  return (s:gsub("[^%w%-%._~]", function(c)
    if form and c == " " then return "+" end
    return format("%%%02X", c:byte())
  end))
end

local function scalar(v, which, what)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" or t == "boolean" then return tostring(v) end
  argerror(which, format("%s values must be strings, numbers or booleans, "
    .. "got %s", what, t))
end

--- Encodes a table as key=value pairs joined by "&". Accepts a map
--- (keys sorted for a stable order; a list value repeats the key) and/or
--- an array of {key, value} pairs (kept in order).
local function encode_pairs(t, form, which)
  if type(t) == "string" then return t end
  if type(t) ~= "table" then
    argerror(which, format("%s must be a table or a string, got %s", which,
      type(t)))
  end
  local out = {}
  local function add(k, v)
    k = urlencode(scalar(k, which, which), form)
    if type(v) == "table" then
      for _, item in ipairs(v) do
        out[#out + 1] = k .. "=" .. urlencode(scalar(item, which, which), form)
      end
    else
      out[#out + 1] = k .. "=" .. urlencode(scalar(v, which, which), form)
    end
  end
  local n = #t
  for i = 1, n do
    local pair = t[i]
    if type(pair) ~= "table" or pair[1] == nil then
      argerror(which, format("%s[%d] must be a {key, value} pair", which, i))
    end
    add(pair[1], pair[2])
  end
  local keys = {}
  for k in pairs(t) do
    if not (math_type(k) == "integer" and k >= 1 and k <= n) then
      if type(k) ~= "string" then
        argerror(which, format("%s keys must be strings", which))
      end
      keys[#keys + 1] = k
    end
  end
  sort(keys)
  for _, k in ipairs(keys) do add(k, t[k]) end
  return concat(out, "&")
end

-- ---------------------------------------------------------------------------
-- Headers

local TOKEN = "^[!#$%%&'*+%-.^_`|~%w]+$"

--- Case-insensitive, order-preserving response headers. Indexing with a
--- string that is not a method name looks the header up:
--- `headers["Content-Type"]` is `headers:get("Content-Type")`.
---@class lunio.http.Headers
local Headers = {}
local HeadersMT = { __name = "lunio.http.Headers" }
M.Headers = Headers

-- Parses a response's header block (its lines as received, the status
-- line first) into a flat list {name1, value1, name2, value2, ...} in
-- arrival order; a folded line continues the previous value.
local function parse_header_block(raw)
  local flat, n = {}, 0
  for line in raw:gmatch("[^\n]+") do
    line = line:match("^(.-)[ \t\r]*$")
    if line:find("^[ \t]") then
      if n > 0 then flat[n] = flat[n] .. " " .. line:match("^[ \t]*(.*)") end
    elseif line ~= "" and not line:find("^HTTP/") then
      local name, value = line:match("^([^:]-)[ \t]*:[ \t]*(.*)$")
      if name then
        flat[n + 1], flat[n + 2] = name, value
        n = n + 2
      end
    end
  end
  return flat
end
M._parse_header_block = parse_header_block

-- The flat list {name, value, ...} of a Headers object. rawget: a
-- missing field must not go through __index (which looks headers up).
local function flat_of(self)
  return rawget(self, "_flat")
end

-- name:lower() -> list of values, built on first use. rawget: a missing
-- field must not go through __index (which looks headers up).
local function headers_index(self)
  local idx = rawget(self, "_idx")
  if idx == nil then
    idx = {}
    local f = flat_of(self)
    for i = 1, #f, 2 do
      local k = f[i]:lower()
      local list = idx[k]
      if list == nil then
        list = {}
        idx[k] = list
      end
      list[#list + 1] = f[i + 1]
    end
    self._idx = idx
  end
  return idx
end

local function header_value(self, name)
  local list = headers_index(self)[name:lower()]
  if list == nil then return nil end
  if #list == 1 then return list[1] end
  return concat(list, ", ")
end

--- The value of a header, repeated values joined with ", "; nil if absent.
---@param name string
---@return string|nil
function Headers:get(name)
  if type(name) ~= "string" then
    error(format("bad argument #1 to 'get' (string expected, got %s)",
      type(name)), 2)
  end
  return header_value(self, name)
end

-- Methods first; any other string key is a header name (case-insensitive).
-- So `headers.get` is the method even if a "Get" header exists.
function HeadersMT.__index(self, k)
  local method = Headers[k]
  if method ~= nil then return method end
  if type(k) == "string" then return header_value(self, k) end
  return nil
end

--- Every value of a header, in order (an empty list if absent).
---@param name string
---@return string[]
function Headers:get_all(name)
  if type(name) ~= "string" then
    error(format("bad argument #1 to 'get_all' (string expected, got %s)",
      type(name)), 2)
  end
  local list = headers_index(self)[name:lower()]
  local copy = {}
  if list then
    for i, v in ipairs(list) do copy[i] = v end
  end
  return copy
end

--- Whether the header is present.
function Headers:has(name)
  return headers_index(self)[tostring(name):lower()] ~= nil
end

--- The headers as a list of {name, value} pairs, in order.
---@return string[][]
function Headers:list()
  local out, f = {}, flat_of(self)
  for i = 1, #f, 2 do out[#out + 1] = { f[i], f[i + 1] } end
  return out
end

--- `for name, value in pairs(headers)`: every header line in order (a
--- repeated header appears once per line).
function HeadersMT:__pairs()
  local f, i = flat_of(self), -1
  return function()
    i = i + 2
    local k = f[i]
    if k ~= nil then return k, f[i + 1] end
  end, self, nil
end

function HeadersMT:__len()
  return #flat_of(self) // 2
end

function HeadersMT:__tostring()
  local out, f = {}, flat_of(self)
  for i = 1, #f, 2 do out[#out + 1] = f[i] .. ": " .. f[i + 1] end
  return concat(out, "\n")
end

-- ---------------------------------------------------------------------------
-- Response

---@class lunio.http.Response
---@field status integer
---@field ok boolean
---@field reason string
---@field http_version string
---@field url string
---@field headers lunio.http.Headers
---@field body string|nil
---@field timings {dns: number, connect: number, tls: number, ttfb: number, total: number}
---@field output string|nil
local Response = {}
Response.__name = "lunio.http.Response"
M.Response = Response

-- The timings the C side packs as five doubles (dns, connect, tls, ttfb,
-- total), as a table.
local function unpack_timings(raw)
  local dns, connect, tls, ttfb, total = string.unpack("ddddd", raw)
  return { dns = dns, connect = connect, tls = tls, ttfb = ttfb, total = total }
end

-- Fields computed when first read, from what the C side left raw (_head:
-- the header block, _times: five doubles): most callers never read them.
local LAZY = {
  headers = function(self)
    return setmetatable({ _flat = parse_header_block(rawget(self, "_head") or "") }, HeadersMT)
  end,
  reason = function(self)
    local line = (rawget(self, "_head") or ""):match("^[^\r\n]*")
    return line:match("^HTTP/%S+[ \t]+%d+[ \t]*(.-)[ \t]*$") or ""
  end,
  timings = function(self)
    local raw = rawget(self, "_times")
    return raw and unpack_timings(raw)
  end,
}

function Response.__index(self, k)
  local method = Response[k]
  if method ~= nil then return method end
  local make = LAZY[k]
  if make ~= nil then
    local v = make(self)
    rawset(self, k, v)
    return v
  end
  return nil
end

local function refresh_timings(self)
  local t, now = self.timings, unpack_timings(C.transfer_info(self._xfer))
  for k, v in pairs(now) do t[k] = v end
end

--- Reads the next piece of the body: at most `n` bytes (default: whatever
--- has arrived); nil at the end. On a streamed response this waits for data
--- and raises the transfer's error if it failed midway.
---@async
---@param n? integer
---@return string|nil
function Response:read(n)
  if n ~= nil and (math_type(n) ~= "integer" or n < 0) then
    error("bad argument #1 to 'read' (non-negative integer expected)", 2)
  end
  local x = self._xfer
  if x == nil then
    local body = self.body
    if body == nil then return nil end
    local pos = self._pos or 1
    if pos > #body then return nil end
    local last = (n and n > 0) and pos + n - 1 or #body
    self._pos = last + 1
    return body:sub(pos, last)
  end
  local chunk = C.read(x, n)
  local progress = self._progress
  if chunk == nil then
    if not self._eof then
      self._eof = true
      refresh_timings(self)
      if progress then
        local _, now = C.transfer_info(x)
        progress(now, self._total or now)
      end
    end
  elseif progress then
    local _, now = C.transfer_info(x)
    progress(now, self._total)
  end
  return chunk
end

--- Iterator over the body's pieces: `for chunk in resp:chunks() do`.
---@async
---@param n? integer maximum piece size
function Response:chunks(n)
  return function() return self:read(n) end
end

--- The whole body as a string (reads the rest of a streamed body).
---@async
---@return string
function Response:text()
  if self.body ~= nil then return self.body end
  if self.output ~= nil then
    error(lunio_error("invalid_state",
      "the body was written to " .. self.output, { path = self.output }), 2)
  end
  local parts = {}
  for chunk in self:chunks() do parts[#parts + 1] = chunk end
  self.body = concat(parts)
  self._pos = #self.body + 1
  return self.body
end

--- The body decoded as JSON (needs lua-cjson).
---@async
function Response:json()
  local json = need_cjson("Response:json()")
  return json.decode(self:text())
end

--- Raises an error of kind "http_status" (with .status, .url, .response)
--- unless the status is 2xx; returns the response otherwise.
---@return lunio.http.Response
function Response:raise_for_status()
  if self.ok then return self end
  local msg = format("HTTP %d%s for %s", self.status,
    self.reason ~= "" and " " .. self.reason or "", self.url)
  error(lunio_error("http_status", msg,
    { status = self.status, url = self.url, response = self }), 2)
end

--- Diagnostics of a streamed transfer: {received=, buffered=, paused=,
--- done=} (bytes on the wire, bytes waiting for read(), flow control).
function Response:_transfer_state()
  if self._xfer == nil then return nil end
  local _, received, done, buffered, paused = C.transfer_info(self._xfer)
  return { received = received, buffered = buffered, paused = paused,
    done = done }
end

--- Aborts a streamed transfer that is still running and drops its data.
function Response:close()
  if self._xfer then C.transfer_close(self._xfer) end
end

Response.__close = Response.close

function Response:__tostring()
  return format("lunio.http.Response<%d%s %s>", self.status,
    self.reason ~= "" and " " .. self.reason or "", self.url)
end

-- The C side's table becomes the Response (no copy).
local function make_response(info, xfer, spec, session)
  local status = info.status
  info.ok = status >= 200 and status < 300
  info.method = spec.method
  info.output = spec.output
  if xfer then
    info._xfer = xfer
    info._session = session -- keeps the pool alive while streaming
    info._progress = spec.on_progress
  end
  return setmetatable(info, Response)
end

-- ---------------------------------------------------------------------------
-- Requests

-- Options a Session may set as defaults for its requests.
local DEFAULTABLE = {
  timeout = true, connect_timeout = true, idle_timeout = true,
  redirects = true, verify = true,
  cainfo = true, proxy = true, http_version = true, decompress = true,
  max_body_size = true, auth = true,
}

local REQUEST_OPTS = {
  method = true, headers = true, query = true, body = true, form = true,
  json = true, stream = true, output = true, on_progress = true,
}
for k in pairs(DEFAULTABLE) do REQUEST_OPTS[k] = true end

local SESSION_OPTS = { base_url = true, headers = true, max_connections = true,
  max_per_host = true }
for k in pairs(DEFAULTABLE) do SESSION_OPTS[k] = true end

-- libcurl waits 300 s for a connection by default; no total limit is set
-- by default because it would also cut long streamed downloads.
local DEFAULT_CONNECT_TIMEOUT = 10
-- Seconds without a byte moving before a transfer ends with kind "timeout"
-- (aiohttp and Node wait 300 s, httpx 5 s); `idle_timeout = false` waits
-- for ever.
local DEFAULT_IDLE_TIMEOUT = 30

local HTTP_VERSIONS = { ["1.0"] = true, ["1.1"] = true, ["2"] = true,
  ["2-prior-knowledge"] = true }

local function positive(v, name)
  if v ~= nil and (type(v) ~= "number" or v ~= v or v <= 0) then
    argerror("opts", format("%s must be a positive number of seconds", name))
  end
end

local function nonneg_int(v, name)
  if v ~= nil and (math_type(v) ~= "integer" or v < 0) then
    argerror("opts", format("%s must be a non-negative integer", name))
  end
end

local function check_option_types(o, where)
  positive(o.timeout, "timeout")
  positive(o.connect_timeout, "connect_timeout")
  if o.idle_timeout ~= false then positive(o.idle_timeout, "idle_timeout") end
  nonneg_int(o.redirects, "redirects")
  nonneg_int(o.max_body_size, "max_body_size")
  for _, k in ipairs({ "verify", "decompress" }) do
    if o[k] ~= nil and type(o[k]) ~= "boolean" then
      argerror(where, k .. " must be a boolean")
    end
  end
  if o.cainfo ~= nil and type(o.cainfo) ~= "string" then
    argerror(where, "cainfo must be a file name")
  end
  if o.proxy ~= nil and o.proxy ~= false and type(o.proxy) ~= "string" then
    argerror(where, "proxy must be a URL string or false")
  end
  if o.http_version ~= nil and not HTTP_VERSIONS[o.http_version] then
    argerror(where, "http_version must be \"1.0\", \"1.1\", \"2\" or "
      .. "\"2-prior-knowledge\"")
  end
  if o.auth ~= nil then
    local a = o.auth
    if type(a) ~= "table" then
      argerror(where, "auth must be a table {user, password}")
    end
    local user, pw = a.user or a[1], a.password or a[2]
    if type(user) ~= "string" or (pw ~= nil and type(pw) ~= "string") then
      argerror(where, "auth must be {user, password} with string values")
    end
  end
end

local function check_header_value(name, v, which)
  if type(v) == "number" then v = tostring(v) end
  if type(v) ~= "string" then
    argerror(which, format("header '%s' must be a string, a list of strings "
      .. "or false, got %s", name, type(v)))
  end
  if v:find("[\r\n%z]") then
    argerror(which, format("header '%s' contains CR, LF or NUL (header "
      .. "injection?)", name))
  end
  return v
end

--- Normalises a headers table (name -> string | list | false) into an
--- ordered list of {name=, key=, values=} (values false = remove).
local function normalize_headers(h, which)
  if h == nil then return {} end
  if type(h) ~= "table" then
    argerror(which, "headers must be a table")
  end
  local names = {}
  for name in pairs(h) do
    if type(name) ~= "string" or not name:find(TOKEN) then
      argerror(which, format("invalid header name %q", tostring(name)))
    end
    names[#names + 1] = name
  end
  sort(names)
  local out = {}
  for _, name in ipairs(names) do
    local v = h[name]
    local values
    if v == false then
      values = false
    elseif type(v) == "table" then
      values = {}
      for i, item in ipairs(v) do values[i] = check_header_value(name, item, which) end
    else
      values = { check_header_value(name, v, which) }
    end
    out[#out + 1] = { name = name, key = name:lower(), values = values }
  end
  return out
end

--- Session headers, then request headers overriding them by name.
local function merge_headers(base, extra)
  if #extra == 0 then return base end
  local out, pos = {}, {}
  for i, h in ipairs(base) do
    out[i] = h
    pos[h.key] = i
  end
  for _, h in ipairs(extra) do
    local i = pos[h.key]
    if i then
      out[i] = h
    else
      out[#out + 1] = h
      pos[h.key] = #out
    end
  end
  return out
end

local function join_url(base, url)
  if base == nil or url:find("^%a[%w+.-]*://") then return url end
  if url == "" then return base end
  return (base:gsub("/+$", "")) .. "/" .. (url:gsub("^/+", ""))
end

local function add_query(url, q)
  local qs = encode_pairs(q, false, "query")
  if qs == "" then return url end
  local head, frag = url:match("^([^#]*)(#.*)$")
  if head == nil then head, frag = url, "" end
  return head .. (head:find("?", 1, true) and "&" or "?") .. qs .. frag
end

--- Turns (session config, method, url, opts) into the spec C.perform takes.
local function check_url(cfg, url)
  if type(url) ~= "string" then
    argerror("url", "string expected, got " .. type(url))
  end
  url = join_url(cfg.base_url, url)
  if not url:find("^[hH][tT][tT][pP][sS]?://") then
    argerror("url", format("expected an http:// or https:// URL, got %q", url))
  end
  if url:find("[%c ]") then
    argerror("url", "URL contains spaces or control characters")
  end
  return url
end

local function prepare(cfg, method, url, opts)
  if opts == nil then
    opts = {}
  elseif type(opts) ~= "table" then
    argerror("opts", "table expected, got " .. type(opts))
  end
  for k in pairs(opts) do
    if not REQUEST_OPTS[k] then
      argerror("opts", format("unknown option '%s'", tostring(k)))
    end
  end
  url = check_url(cfg, url)
  if opts.query ~= nil then url = add_query(url, opts.query) end

  local nbody = (opts.body ~= nil and 1 or 0) + (opts.form ~= nil and 1 or 0)
    + (opts.json ~= nil and 1 or 0)
  if nbody > 1 then
    argerror("opts", "give only one of body, form and json")
  end
  if opts.body ~= nil and type(opts.body) ~= "string" then
    argerror("opts", "body must be a string")
  end

  method = method or opts.method or (nbody > 0 and "POST" or "GET")
  if type(method) ~= "string" or not method:find(TOKEN) then
    argerror(opts.method and "opts" or "method", "invalid HTTP method")
  end
  method = method:upper()

  local o = {}
  for k in pairs(DEFAULTABLE) do
    local v = opts[k]
    if v == nil then v = cfg[k] end
    o[k] = v
  end
  check_option_types(o, "opts")
  if opts.stream ~= nil and type(opts.stream) ~= "boolean" then
    argerror("opts", "stream must be a boolean")
  end
  if opts.output ~= nil and type(opts.output) ~= "string" then
    argerror("opts", "output must be a file name")
  end
  if opts.output and opts.stream then
    argerror("opts", "give only one of stream and output")
  end
  if opts.on_progress ~= nil and not is_callable(opts.on_progress) then
    argerror("opts", "on_progress must be callable")
  end

  local body, ctype = opts.body, nil
  if opts.form ~= nil then
    if type(opts.form) ~= "table" then argerror("opts", "form must be a table") end
    body = encode_pairs(opts.form, true, "form")
    ctype = "application/x-www-form-urlencoded"
  elseif opts.json ~= nil then
    body = need_cjson("the json option").encode(opts.json)
    ctype = "application/json"
  end

  local hs = merge_headers(cfg.headers, normalize_headers(opts.headers, "opts"))
  local lines, seen = {}, {}
  for _, h in ipairs(hs) do
    seen[h.key] = true
    if h.values == false then
      lines[#lines + 1] = h.name .. ":" -- removes a header curl would add
    else
      for _, v in ipairs(h.values) do
        lines[#lines + 1] = v == "" and h.name .. ";" or h.name .. ": " .. v
      end
    end
  end
  if not seen["user-agent"] then lines[#lines + 1] = "User-Agent: " .. USER_AGENT end
  if not seen["expect"] then lines[#lines + 1] = "Expect:" end
  if body ~= nil and not seen["content-type"] then
    -- a raw body gets no Content-Type (libcurl would claim a form)
    lines[#lines + 1] = ctype and "Content-Type: " .. ctype or "Content-Type:"
  end

  local auth = o.auth
  return {
    url = url,
    method = method,
    headers = lines,
    body = body,
    timeout = o.timeout,
    connect_timeout = o.connect_timeout or DEFAULT_CONNECT_TIMEOUT,
    idle_timeout = o.idle_timeout ~= false
      and (o.idle_timeout or DEFAULT_IDLE_TIMEOUT) or nil,
    redirects = o.redirects,
    verify = o.verify,
    cainfo = o.cainfo,
    proxy = o.proxy == false and "" or o.proxy,
    http_version = o.http_version,
    decompress = o.decompress,
    stream = opts.stream,
    output = opts.output,
    max_body_size = o.max_body_size,
    user = auth and (auth.user or auth[1]),
    password = auth and (auth.password or auth[2]),
    on_progress = opts.on_progress,
  }
end

-- argument positions of (method, url, opts) per calling convention
local POS_FETCH = { url = 1, opts = 2, method = 2 }
local POS_REQUEST = { method = 1, url = 2, opts = 3 }

-- Requests without options (session:get(url), the common case) differ only
-- in their URL: everything else prepare() computes is kept per session
-- config and method, and such a request's spec is {url = ...} inheriting
-- the rest through its metatable. Configs are fixed once a session exists.
local templates = setmetatable({}, { __mode = "k" }) -- cfg -> method -> mt
-- Each template has a number, never reused (C.new_template_id): the C side
-- keeps an idle curl handle set up for a template and, for the next
-- request of the same number, sets only its URL (see http.c's easy slots).

local function remember(cfg, method, spec)
  local by_method = templates[cfg]
  if by_method == nil then
    by_method = {}
    templates[cfg] = by_method
  end
  local shared = {}
  for k, v in pairs(spec) do
    if k ~= "url" then shared[k] = v end
  end
  by_method[method] = { __index = shared, template = C.new_template_id() }
end

local function spec_of(cfg, method, url, opts)
  if opts == nil then
    local by_method = templates[cfg]
    local mt = by_method and by_method[method or "GET"]
    if mt then return setmetatable({ url = check_url(cfg, url) }, mt), mt.template end
    local spec = prepare(cfg, method, url, nil)
    remember(cfg, method or "GET", spec)
    return spec
  end
  return prepare(cfg, method, url, opts)
end

--- Runs one request. Called in tail position by every public entry point,
--- so level 2 of an error is the user's call site.
local function request_impl(session, cfg, method, url, opts, fname, pos)
  local ok, spec, template = pcall(spec_of, cfg, method, url, opts)
  if not ok then
    if getmetatable(spec) == ArgError then
      error(format("bad argument #%d to '%s' (%s)", pos[spec.which] or 1,
        fname, spec.msg), 2)
    end
    error(spec, 0)
  end
  local info, xfer = C.perform(session, spec, template)
  return make_response(info, xfer, spec, session)
end

-- ---------------------------------------------------------------------------
-- Sessions

-- A Session's defaults live in its userdata (C.session_config), not in a
-- table of this module, so they survive a reload of the module.
local DEFAULT_CONFIG = { headers = {} }

local function config_of(session)
  return C.session_config(session) or DEFAULT_CONFIG
end

---@class lunio.http.Session
local Session = C.session_methods
M.SessionMethods = Session

local function method_shortcut(name, m)
  Session[name] = function(self, url, opts)
    return request_impl(self, config_of(self), m, url, opts, name, POS_FETCH)
  end
  M[name] = function(url, opts)
    return request_impl(C.default_session(name), DEFAULT_CONFIG, m, url, opts,
      name, POS_FETCH)
  end
end

--- session:fetch(url [, opts]) -> Response
---@async
function Session:fetch(url, opts)
  return request_impl(self, config_of(self), nil, url, opts, "fetch", POS_FETCH)
end

--- session:request(method, url [, opts]) -> Response
---@async
function Session:request(method, url, opts)
  if type(method) ~= "string" then
    error(format("bad argument #1 to 'request' (string expected, got %s)",
      type(method)), 2)
  end
  return request_impl(self, config_of(self), method, url, opts, "request",
    POS_REQUEST)
end

method_shortcut("get", "GET")
method_shortcut("head", "HEAD")
method_shortcut("post", "POST")
method_shortcut("put", "PUT")
method_shortcut("patch", "PATCH")
method_shortcut("delete", "DELETE")

--- fetch(url [, opts]) -> Response, on the loop's shared session.
---@async
---@param url string
---@param opts? table
---@return lunio.http.Response
function M.fetch(url, opts)
  return request_impl(C.default_session(), DEFAULT_CONFIG, nil, url, opts,
    "fetch", POS_FETCH)
end

--- request(method, url [, opts]) -> Response, on the loop's shared session.
---@async
function M.request(method, url, opts)
  if type(method) ~= "string" then
    error(format("bad argument #1 to 'request' (string expected, got %s)",
      type(method)), 2)
  end
  return request_impl(C.default_session("request"), DEFAULT_CONFIG, method,
    url, opts, "request", POS_REQUEST)
end

--- Session([opts]) -> a client with its own connection pool, cookie jar
--- and defaults. opts: base_url, headers, max_connections (default 100,
--- 0 = unlimited), max_per_host (default 0 = unlimited), and defaults for
--- timeout, connect_timeout, redirects, verify, cainfo, proxy,
--- http_version, decompress, max_body_size, auth.
---@param opts? table
---@return lunio.http.Session
function M.Session(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error(format("bad argument #1 to 'Session' (table expected, got %s)",
      type(opts)), 2)
  end
  local ok, cfg = pcall(function()
    for k in pairs(opts) do
      if not SESSION_OPTS[k] then
        argerror("opts", format("unknown option '%s'", tostring(k)))
      end
    end
    nonneg_int(opts.max_connections, "max_connections")
    nonneg_int(opts.max_per_host, "max_per_host")
    check_option_types(opts, "opts")
    local base = opts.base_url
    if base ~= nil and (type(base) ~= "string"
        or not base:find("^[hH][tT][tT][pP][sS]?://")) then
      argerror("opts", "base_url must be an http:// or https:// URL")
    end
    local c = { base_url = base, headers = normalize_headers(opts.headers, "opts") }
    for k in pairs(DEFAULTABLE) do c[k] = opts[k] end
    return c
  end)
  if not ok then
    if getmetatable(cfg) == ArgError then
      error(format("bad argument #1 to 'Session' (%s)", cfg.msg), 2)
    end
    error(cfg, 0)
  end
  return C.session_new(opts.max_connections or 100, opts.max_per_host or 0,
    cfg)
end

--- The running loop's shared session (used by the module-level functions).
function M.default_session()
  return C.default_session("default_session")
end


return M
