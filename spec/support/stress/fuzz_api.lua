-- API fuzzer (started by spec/fuzz_spec.lua, under ASan+UBSan in `make
-- check-stress`; runs by hand too):
--
--   lua5.4 spec/support/stress/fuzz_api.lua ITERATIONS SEED HTTP_BASE TRACE
--
-- Calls every public function and method reachable from `require "lunio"`
-- with random arguments: wrong types, NaN, ±huge and negative numbers,
-- huge strings, embedded NULs, tables with metatables whose metamethods
-- raise, callables that raise or yield, other lunio objects; inside tasks,
-- in loop callbacks (outside tasks), with no loop running, and on closed or
-- finished objects. The targets are found by walking the live tables (as
-- spec/types_spec.lua does) and the methods tables of live objects made by
-- OBJECTS below, so a new function or class method is fuzzed without a
-- change here.
--
-- Every call must return or raise a Lua error: a lunio error of a
-- documented kind, a "bad argument" error, an error one of the hostile
-- values raised, or another message; errors that show lunio's own Lua code
-- failing ("attempt to index ..." at lua/lunio/*.lua) are defects. A call
-- must not hang: calls in tasks are cancelled after a deadline and must
-- then end; calls outside tasks must return. Before each call its target
-- and argument types are written to TRACE, so a crash names the call.
--
-- Nothing destructive: it refuses to run outside a working directory
-- /tmp/lunio-fuzz*, fs paths are confined to a temporary directory, URLs
-- and proxies to the loopback fixture (HTTP_BASE), host names to numeric
-- loopback addresses (no DNS query leaves the machine), no signal is sent.
--
-- Prints "seed=S iterations=N targets=T",
-- per-phase counts, the distinct messages of the "other" and "defect"
-- classes, then "summary ..." and "ok" (exit 0), or raises.
local S = require "support.stress"
local lunio = require "lunio"

local ITER = math.tointeger(tonumber(arg[1] or "")) or 20000
local SEED = math.tointeger(tonumber(arg[2] or "")) or 1
local BASE = arg[3] or "http://127.0.0.1:9"
local TRACE = arg[4] or os.tmpname()
math.randomseed(SEED)
local random = math.random

-- A call in a task that has not ended after DEADLINE is cancelled (it
-- waits for something: a queue, a lock, a transfer ...); if it has not
-- ended GRACE seconds after that, it is a hang.
local DEADLINE = 0.1
local GRACE = 10

-- A relative path still lands in the working directory: the fuzzer runs
-- only inside a directory of its own under /tmp (spec/fuzz_spec.lua makes
-- one), never in a checkout.
local CWD
do
  local p = assert(io.popen("pwd"))
  CWD = p:read("l") or ""
  p:close()
  if not CWD:find("^/tmp/lunio%-fuzz") then
    error("fuzz_api.lua: run it from a directory /tmp/lunio-fuzz* (here: " .. CWD .. ")", 0)
  end
end

local trace = assert(io.open(TRACE, "w"))
local function note(line)
  trace:seek("set")
  trace:write(line, (" "):rep(200 - #line > 0 and 200 - #line or 0), "\n")
  trace:flush()
end

-- ---------------------------------------------------------------------------
-- Values

local TMP -- the temporary directory (made in the first loop run)
local MARK = "fuzz:" -- errors raised by hostile values start with it

local function raiser(what) return function() error(MARK .. what, 0) end end

local HUGE_STRING = ("x"):rep(1 << 20)
local NUL_STRING = "a\0b\0\0c"

local function rand_string(max)
  local n = random(0, max or 24)
  local t = {}
  for i = 1, n do t[i] = string.char(random(0, 255)) end
  return table.concat(t)
end

local CALLABLES = {
  function() end,
  raiser("callable"),
  function(...) return ... end,
  function() return 1, nil, 3 end,
  coroutine.yield,
  lunio.sleep,
  print ~= nil and function() return {} end,
  setmetatable({}, { __call = function() return true end }),
  setmetatable({}, { __call = raiser("__call") }),
}

local function hostile(k)
  k = k or random(1, 14)
  if k == 1 then return setmetatable({}, { __index = raiser("__index") }) end
  if k == 2 then return setmetatable({}, { __tostring = raiser("__tostring") }) end
  if k == 3 then return setmetatable({}, { __newindex = raiser("__newindex") }) end
  if k == 4 then return setmetatable({}, { __len = raiser("__len") }) end
  if k == 5 then return setmetatable({}, { __call = raiser("__call") }) end
  if k == 6 then return setmetatable({}, { __eq = raiser("__eq"), __lt = raiser("__lt"),
    __le = raiser("__le") }) end
  if k == 7 then return setmetatable({}, { __pairs = raiser("__pairs") }) end
  if k == 8 then return setmetatable({}, { __close = raiser("__close") }) end
  if k == 9 then return setmetatable({}, { __name = 12, __tostring = function() return 7 end }) end
  if k == 10 then return setmetatable({}, { __metatable = false }) end
  if k == 11 then
    -- claims every field, with random values: option tables go deep
    return setmetatable({}, { __index = function()
      return ({ 1, -1, 0 / 0, "x", true, {} })[random(6)]
    end })
  end
  if k == 12 then return setmetatable({ 1, 2, 3 }, { __index = function(_, key)
    if key == "kind" then return "timeout" end end }) end
  if k == 13 then return setmetatable({ kind = "cancelled", message = "fake" },
    { __tostring = raiser("__tostring") }) end
  return setmetatable({}, { __concat = raiser("__concat"), __unm = raiser("__unm"),
    __add = raiser("__add") })
end

local NUMBERS = { 0, -0.0, 1, -1, 2, 3, 7, 64, 255, 256, 65535, 65536, 2 ^ 31, -2 ^ 31,
  2 ^ 53, math.maxinteger, math.mininteger, math.huge, -math.huge, 0 / 0, 1e-300, 1e308,
  -1e308, 0.5, -0.5, 1.5, 1e-9 }

local SIGNALS = { "SIGWINCH", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGHUP", "SIGINT",
  "SIGKILL", "SIGSTOP", "SIGSEGV", "SIGPIPE", "SIGCHLD", "SIG", "NOPE", "sigterm" }

local OPT_KEYS = { "timeout", "connect_timeout", "idle_timeout", "redirects", "verify",
  "headers", "query", "body", "form", "json", "stream", "output", "method",
  "max_body_size", "auth", "base_url", "max_connections", "max_per_host",
  "http_version", "decompress", "on_progress", "cainfo", "proxy", "return_errors",
  "return_when", "parents", "family", "type", "mode", "limit", "backlog", "reuseport",
  "write_high_water", "cwd", "env", "stdin", "stdout", "stderr", "input", "kill_grace",
  "virtual_time", "check_leaks" }

local OTHER_OBJECTS = {} -- live lunio objects, filled as they are made

local any

local function rand_table(depth)
  local r = random(1, 6)
  if r == 1 then return {} end
  if r == 2 then
    local t = {}
    for i = 1, random(1, 5) do t[i] = any(depth + 1) end
    return t
  end
  if r == 3 or r == 4 then -- an options table with plausible keys
    local t = {}
    for _ = 1, random(1, 4) do t[OPT_KEYS[random(#OPT_KEYS)]] = any(depth + 1) end
    return t
  end
  if r == 5 then
    local t, k = {}, any(depth + 1)
    if k == nil or k ~= k then k = 1 end -- no nil or NaN key
    t[k] = any(depth + 1)
    return t
  end
  local t = {}
  t.t = t -- a cycle
  return t
end

function any(depth)
  depth = depth or 0
  local r = random(1, depth > 1 and 10 or 16)
  if r == 1 then return nil end
  if r == 2 then return random() < 0.5 end
  if r == 3 then return NUMBERS[random(#NUMBERS)] end
  if r == 4 then return random(-1000, 1000) end
  if r == 5 then return rand_string() end
  if r == 6 then return ({ "", NUL_STRING, "r", "w", "a", "r+", "GET", "stream", "all_completed",
    "first_completed", "first_error", "inet", "inet6", "1.1", "2", "x\r\ny: z" })[random(16)] end
  if r == 7 then return SIGNALS[random(#SIGNALS)] end
  if r == 8 then return CALLABLES[random(#CALLABLES)] end
  if r == 9 then return BASE .. "/" .. ({ "small.txt", "status/404", "redirect/3", "echo",
    "gzip.txt", "headers/multi", rand_string(8) })[random(7)] end
  if r == 10 then return random(-5, 5) end
  if r == 11 then return hostile() end
  if r == 12 then return rand_table(depth) end
  if r == 13 then return #OTHER_OBJECTS > 0 and OTHER_OBJECTS[random(#OTHER_OBJECTS)] or 0 end
  if r == 14 then return random() < 0.2 and HUGE_STRING or rand_string(200) end
  if r == 15 then return coroutine.create(function() end) end
  return debug.upvalueid(any, 1) -- a light userdata
end

-- ---------------------------------------------------------------------------
-- Keeping the fuzzer on this machine and in its directory

local LOOPBACK_PREFIXES = { BASE, "http://127.0.0.1:9" }

local function loopback_url(s)
  for _, p in ipairs(LOOPBACK_PREFIXES) do
    if s:sub(1, #p) == p then return true end
  end
  return false
end

local function confine_path(s)
  -- no "/", no "..", never empty nor ".": a name inside TMP, not TMP
  local name = "f" .. s:gsub("[/%z]", "_"):gsub("%.%.", "_")
  if random() < 0.1 then name = name .. "\0x" end -- an embedded NUL
  return TMP .. "/" .. name:sub(1, 64)
end

-- Rewrites the arguments of a call to `target` (a name like "lunio.fs.open"
-- or "File:write") so that nothing leaves loopback or TMP. Walks tables
-- (raw, without metamethods; hostile tables stay as they are).
local function sanitize(target, args, n)
  local fs = target:find("^lunio%.fs%.") or target:find("^File:") or target:find("^lunio%.fs$")
  local seen = {}
  local function fix(v, key)
    local tv = type(v)
    if tv == "number" and fs then
      -- C functions take numbers for strings: 42 would be the path "42"
      return random() < 0.5 and confine_path(tostring(v)) or v
    elseif tv == "string" then
      if fs and key ~= "data" then return confine_path(v) end
      if key == "proxy" then return random() < 0.5 and "" or "http://127.0.0.1:9" end
      if key == "output" or key == "cainfo" then return confine_path(v) end
      if v:find("://", 1, true) and not loopback_url(v) then return BASE .. "/small.txt" end
      return v
    elseif tv == "table" and not seen[v] and getmetatable(v) == nil then
      seen[v] = true
      local fixes = {}
      for k, x in next, v do
        local nv = fix(x, k)
        if nv ~= x then fixes[k] = nv end
        if type(k) == "string" and k:find("://", 1, true) and not loopback_url(k) then
          fixes[k] = nil
        end
      end
      for k, x in pairs(fixes) do rawset(v, k, x) end
      if rawget(v, "proxy") ~= nil and type(rawget(v, "proxy")) ~= "string" then
        rawset(v, "proxy", false)
      end
    elseif tv == "table" and getmetatable(v) ~= nil and fs then
      -- a hostile table could answer a path through __index: fs needs none
      return 0
    end
    return v
  end
  for i = 1, n do args[i] = fix(args[i], nil) end
  if target == "lunio.getaddrinfo" and type(args[1]) == "string" then
    args[1] = ({ "127.0.0.1", "::1", "0.0.0.0", "1.2.3.4.5", "" })[random(5)]
    if args[1] == "1.2.3.4.5" or args[1] == "" then args[1] = 42 end
  end
  if target == "lunio.getnameinfo" and type(args[1]) == "string" then
    args[1] = random() < 0.7 and "127.0.0.1" or "not an address"
  end
  if (target:find("^lunio%.http%.") or target:find("^Session:")) then
    -- a URL argument: the fixture, a closed loopback port, or garbage
    for i = 1, n do
      if type(args[i]) == "string" and args[i]:find("^%a+:") and not loopback_url(args[i]) then
        args[i] = BASE .. "/small.txt"
      end
    end
    -- options tables: hostile ones could answer `proxy` or `output`
    for i = 1, n do
      if type(args[i]) == "table" and getmetatable(args[i]) ~= nil then
        local mt = getmetatable(args[i])
        if type(mt) == "table" and type(rawget(mt, "__index")) == "function" then args[i] = {} end
      end
    end
  end
  if target == "lunio.fs.mkdtemp" and type(args[1]) == "string" then
    args[1] = TMP .. "/d" .. args[1]:gsub("[/%z]", "_"):gsub("%.%.", "_"):sub(1, 20)
  end
  return args
end

-- ---------------------------------------------------------------------------
-- Classifying what a call did

local DOC_KINDS = {}
for _, k in ipairs(S.DOC_KINDS) do DOC_KINDS[k] = true end

local counts = { ok = 0, lunio = 0, badarg = 0, hostile = 0, other = 0, defect = 0,
  parked = 0, wrong_self = 0 }
local messages = { other = {}, defect = {} }

local function first_line(s)
  return (s:match("^[^\n]*")):sub(1, 160)
end

-- Lua's own errors that the contract makes the expected outcome.
local EXPECTED_LUA_ERRORS = {
  -- API.md: PriorityQueue items are compared with `<`
  ["Queue:put"] = "attempt to compare", ["Queue:put_nowait"] = "attempt to compare",
}

local function classify(target, ok, err, wrong_self)
  if ok then return "ok" end
  -- a method called with something else as self (`Lock.acquire(42)`):
  -- Lua-implemented methods fail as Lua does ("attempt to index a number
  -- value (local 'self')"); any Lua error is accepted there
  if wrong_self and not lunio.is_error(err) then return "wrong_self" end
  if lunio.is_error(err) then
    local kind = rawget(err, "kind")
    if DOC_KINDS[kind] or (type(kind) == "string" and kind:find("^e[a-z_]+$")) then
      return "lunio"
    end
    return "defect", ("undocumented kind %s: %s"):format(tostring(kind),
      tostring(rawget(err, "message")))
  end
  if type(err) ~= "string" then return "hostile" end -- a hostile value raised itself
  if err:find(MARK, 1, true) then return "hostile" end
  if err:find("bad argument #%d+ to '") then return "badarg" end
  local expected = EXPECTED_LUA_ERRORS[target]
  if expected and err:find(expected, 1, true) then
    return "other", target .. ": " .. first_line(err)
  end
  -- lunio's own Lua code failed on an argument it did not check
  if err:find("lunio/[%w_]+%.lua:%d+: attempt to ")
      or err:find("lunio/[%w_]+%.lua:%d+: bad argument #%d+ to '%?'") then
    return "defect", target .. ": " .. first_line(err)
  end
  return "other", target .. ": " .. first_line(err)
end

local function record(target, ok, err, wrong_self)
  local class, msg = classify(target, ok, err, wrong_self)
  counts[class] = counts[class] + 1
  if msg then
    local m = messages[class]
    m[msg] = (m[msg] or 0) + 1
  end
  return class
end

-- ---------------------------------------------------------------------------
-- Targets

local function public_functions(prefix, t, out)
  for k, v in next, t do
    if type(k) == "string" and k:sub(1, 1) ~= "_" and type(v) == "function" then
      out[#out + 1] = { name = prefix .. "." .. k, fn = v }
    end
  end
end

-- The methods table behind an object's __index (types_spec.lua's way).
local function methods_of(obj)
  local mt = getmetatable(obj)
  local index = type(mt) == "table" and mt.__index
  if type(index) == "function" then index = select(2, debug.getupvalue(index, 1)) end
  return type(index) == "table" and index or nil
end

-- Forces the lazily loaded parts of lunio, as types_spec.lua does.
local function force_lazy()
  for _, name in ipairs({ "http", "fs", "signal", "testing", "subprocess" }) do
    local _ = lunio[name]
  end
  for _, mod in ipairs({ "lunio.sync", "lunio.combinators", "lunio.stream" }) do
    local ok, m = pcall(require, mod)
    if ok then for k in pairs(m) do local _ = lunio[k] end end
  end
end

local function module_targets()
  force_lazy()
  local out = {}
  public_functions("lunio", lunio, out)
  for _, sub in ipairs({ "http", "fs", "signal", "testing", "coroutine", "subprocess" }) do
    if type(rawget(lunio, sub)) == "table" then
      public_functions("lunio." .. sub, lunio[sub], out)
    end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

-- Calls that would end or re-time the loop the fuzzer itself runs on, or
-- leave this process: fuzzed elsewhere (the destructive phase) or not.
local NOT_ON_DRIVER = {
  ["Loop:stop"] = true, ["Loop:close"] = true, ["Loop:set_virtual_time"] = true,
  ["Loop:set_watchdog"] = true, ["Loop:run"] = true, ["Loop:set_signals"] = true,
}

-- Live objects of each class: make(ctx) returns a fresh one (inside a task
-- of the driver loop); `closed` variants too.
local OBJECTS = {
  { class = "Task", make = function()
    local r = random(4)
    local t = lunio.spawn(lunio.sleep, r == 1 and 0 or 0.01 + random() * 0.05)
    if r == 2 then t:cancel() end
    if r == 3 then lunio.sleep(0) end
    if r == 4 then t = lunio.spawn(error, "task failed") lunio.sleep(0) end
    return t
  end },
  { class = "Future", make = function()
    local f = lunio.Future()
    local r = random(4)
    if r == 2 then
      f:set_result(1)
    elseif r == 3 then
      f:cancel()
    elseif r == 4 then
      f:set_error("e")
    end
    return f
  end },
  { class = "Loop", make = function()
    local l = lunio.new_loop()
    if random() < 0.3 then l:close() end
    return l
  end, rename = "IdleLoop" },
  { class = "Loop", make = function() return lunio.get_running_loop() end },
  { class = "Handle", make = function()
    local hnd = lunio.get_running_loop():call_later(60 + random(), function() end)
    if random() < 0.3 then hnd:cancel() end
    return hnd
  end },
  { class = "Event", make = function() return lunio.Event() end },
  { class = "Lock", make = function() return lunio.Lock() end },
  { class = "Guard", make = function()
    local g = lunio.Lock():acquire()
    if random() < 0.5 then g:release() end
    return g
  end },
  { class = "Semaphore", make = function()
    return (random() < 0.5 and lunio.Semaphore or lunio.BoundedSemaphore)(random(0, 3))
  end },
  { class = "Condition", make = function() return lunio.Condition() end },
  { class = "Queue", make = function()
    local q = ({ lunio.Queue, lunio.LifoQueue, lunio.PriorityQueue })[random(3)](random(0, 2))
    if random() < 0.3 then q:shutdown() end
    return q
  end },
  -- scopes belong to the task that made them: a holder task per object
  { class = "Timeout", make = function()
    local got = lunio.Future()
    lunio.spawn(function()
      local scope <close> = lunio.timeout(random() < 0.5 and 30 or nil)
      got:set_result(scope)
      lunio.sleep(30)
    end)
    return got:await()
  end },
  { class = "TaskGroup", make = function()
    local got = lunio.Future()
    lunio.spawn(function()
      local tg <close> = lunio.TaskGroup()
      got:set_result(tg)
      lunio.sleep(30)
    end)
    return got:await()
  end },
  { class = "Session", make = function()
    local s = lunio.http.Session({ timeout = 5 })
    if random() < 0.3 then s:close() end
    return s
  end },
  { class = "Response", make = function()
    local s = lunio.http.Session({ timeout = 5 })
    local resp = s:get(BASE .. "/small.txt", { stream = random() < 0.5 })
    if random() < 0.3 then resp:close() end
    return resp
  end },
  { class = "Headers", make = function()
    local s = lunio.http.Session({ timeout = 5 })
    return s:get(BASE .. "/headers/multi").headers
  end },
  { class = "File", make = function()
    lunio.fs.write_file(TMP .. "/file", "0123456789")
    local f = lunio.fs.open(TMP .. "/file", random() < 0.5 and "r+" or "w")
    if random() < 0.3 then f:close() end
    return f
  end },
  { class = "SignalHandler", make = function()
    local hnd = lunio.signal.on("SIGWINCH", function() end)
    if random() < 0.3 then hnd:close() end
    return hnd
  end },
  { class = "Stream", make = function(ctx)
    if not ctx.server then
      ctx.server = lunio.start_server(function(st) st:read_all() end, "127.0.0.1", 0)
    end
    local st = lunio.open_connection("127.0.0.1", ctx.server.port)
    if random() < 0.3 then st:close() end
    return st
  end },
  { class = "Server", make = function()
    local srv = lunio.start_server(function() end, "127.0.0.1", 0)
    if random() < 0.3 then srv:close() end
    return srv
  end },
  { class = "Process", make = function()
    return lunio.subprocess.exec({ "true" })
  end },
}

-- Objects made on a loop that is closed since: they must stay safe to use.
local function orphans()
  local out = {}
  local l = lunio.new_loop()
  l:run(function()
    out[#out + 1] = { class = "Task", obj = lunio.spawn(lunio.sleep, 10) }
    out[#out + 1] = { class = "Future", obj = lunio.Future() }
    out[#out + 1] = { class = "Session", obj = lunio.http.Session() }
    out[#out + 1] = { class = "Handle", obj = lunio.get_running_loop():call_later(10, print) }
    out[#out + 1] = { class = "File", obj = lunio.fs.open(TMP .. "/orphan", "w") }
    out[#out + 1] = { class = "Loop", obj = lunio.get_running_loop() }
    lunio.sleep(0)
  end)
  l:close()
  return out
end

-- ---------------------------------------------------------------------------
-- Calling

local function describe_args(args, n)
  local parts = {}
  for i = 1, n do
    local v = args[i]
    local tv = type(v)
    if tv == "number" then
      parts[i] = tostring(v)
    elseif tv == "string" then
      parts[i] = ("string(%d)"):format(#v)
    else
      parts[i] = tv
    end
  end
  return table.concat(parts, ", ")
end

-- Random arguments; for a method, self first (5 % of the time something
-- else: the second result is then true).
local function random_args(self)
  local n = random(0, 4)
  local args = {}
  local wrong = false
  for i = 1, n do args[i] = any(0) end
  if self ~= nil then
    wrong = random() < 0.05
    table.insert(args, 1, wrong and any(0) or self)
    n = n + 1
  end
  return args, n, wrong
end

local i_call = 0
local hangs = {}
local reports = 0
local function quiet_handler() reports = reports + 1 end

-- One call of target (name, fn) with random arguments, in `mode`: "task"
-- (a fresh task; cancelled after DEADLINE), "callback" (loop:call_soon,
-- outside tasks) or "direct" (no loop running).
local function call(name, fn, self, mode)
  i_call = i_call + 1
  local args, n, wrong = random_args(self)
  sanitize(name, args, n)
  if NOT_ON_DRIVER[name] and mode ~= "direct" and args[1] == lunio.get_running_loop() then
    -- the driver loop itself (a Loop object, or a wrong self drawn from
    -- the live objects): stopping or closing it would end the fuzzer, not
    -- test lunio
    args[1] = 0
  end
  note(("%d %s %s(%s)"):format(i_call, mode, name, describe_args(args, n)))
  local function rec(ok, err)
    if name:find("set_exception_handler", 1, true) then
      -- the handler the call may have set would print every report
      lunio.set_exception_handler(quiet_handler)
      if self ~= nil then pcall(self.set_exception_handler, self, nil) end
    end
    return record(name, ok, err, wrong)
  end
  if mode == "direct" then
    rec(pcall(fn, table.unpack(args, 1, n)))
    return
  end
  local loop = lunio.get_running_loop()
  if mode == "callback" then
    local done = false
    loop:call_soon(function()
      rec(pcall(fn, table.unpack(args, 1, n)))
      done = true
    end)
    lunio.sleep(0)
    if not done then
      lunio.sleep(0)
      if not done then error("a callback did not run: " .. name) end
    end
    return
  end
  local result
  local t = lunio.spawn(function()
    result = table.pack(pcall(fn, table.unpack(args, 1, n)))
  end)
  local _, pending = lunio.wait({ t }, { timeout = DEADLINE })
  if #pending > 0 then
    counts.parked = counts.parked + 1
    t:cancel()
    _, pending = lunio.wait({ t }, { timeout = GRACE })
    if #pending > 0 then
      hangs[#hangs + 1] = ("%s(%s) did not end %g s after its cancellation"):format(name,
        describe_args(args, n), GRACE)
      return
    end
  end
  if result then
    rec(result[1], result[2])
  elseif t:cancelled() then
    rec(true)
  else
    rec(false, t:error())
  end
end

-- ---------------------------------------------------------------------------
-- Phases

local function run_loop(fn)
  local l = lunio.new_loop()
  local ok, err = pcall(l.run, l, fn)
  l:close()
  if not ok then error(err, 0) end
end

local targets -- module functions
local class_targets = {} -- class -> {name=, fn=} list of methods

local function discover(ctx)
  targets = module_targets()
  for _, o in ipairs(OBJECTS) do
    local cname = o.rename or o.class
    if not class_targets[cname] then
      local obj = o.make(ctx)
      local methods = methods_of(obj)
      local list = {}
      if type(obj) == "table" and getmetatable(obj) and getmetatable(obj).__index == nil then
        methods = nil
      end
      for k, v in next, methods or {} do
        if type(k) == "string" and k:sub(1, 1) ~= "_" and type(v) == "function" then
          local full = o.class .. ":" .. k
          if not (cname == "Loop" and NOT_ON_DRIVER[full]) then
            list[#list + 1] = { name = full, fn = v }
          end
        end
      end
      -- raw public functions of objects that are tables (queues, responses)
      if type(obj) == "table" then
        for k, v in next, obj do
          if type(k) == "string" and k:sub(1, 1) ~= "_" and type(v) == "function" then
            list[#list + 1] = { name = o.class .. ":" .. k, fn = v }
          end
        end
      end
      table.sort(list, function(a, b) return a.name < b.name end)
      class_targets[cname] = { maker = o, methods = list }
    end
  end
end

local function count_targets()
  local n = #targets
  for _, c in pairs(class_targets) do n = n + #c.methods end
  return n
end

-- Phase 1: module functions with no loop running.
local function phase_direct(iterations)
  -- functions that would run a loop get callables that end at once
  for _ = 1, iterations do
    local t = targets[random(#targets)]
    call(t.name, t.fn, nil, "direct")
  end
end

-- Phase 2: module functions and methods of live objects, in tasks and in
-- callbacks, on one driver loop.
local function phase_loop(iterations, ctx, orphaned)
  local objects = {}
  local function refresh()
    for _, o in ipairs(objects) do
      if type(o.obj) == "userdata" or type(o.obj) == "table" then
        local close = rawget(o, "obj") and methods_of(o.obj) and methods_of(o.obj).close
        if close and o.class ~= "Loop" and o.class ~= "Timeout" and o.class ~= "TaskGroup" then
          pcall(close, o.obj)
        end
      end
    end
    objects = {}
    OTHER_OBJECTS = {}
    for cname, c in pairs(class_targets) do
      local ok, obj = pcall(c.maker.make, ctx)
      if ok then
        objects[#objects + 1] = { class = cname, obj = obj }
        OTHER_OBJECTS[#OTHER_OBJECTS + 1] = obj
      end
    end
    for _, o in ipairs(orphaned) do
      objects[#objects + 1] = o
    end
  end
  refresh()
  for i = 1, iterations do
    if i % 200 == 0 then
      refresh()
      lunio.set_exception_handler(quiet_handler)
      collectgarbage()
    end
    local mode = random() < 0.8 and "task" or "callback"
    if random() < 0.4 then
      local t = targets[random(#targets)]
      call(t.name, t.fn, nil, mode)
    else
      local o = objects[random(#objects)]
      local c = class_targets[o.class] or class_targets[o.class == "Loop" and "IdleLoop" or ""]
      if c and #c.methods > 0 then
        local m = c.methods[random(#c.methods)]
        call(m.name, m.fn, o.obj, mode) -- call() keeps the driver loop out
      end
    end
  end
end

-- Phase 3: the loop methods that end or re-time a loop, each on a loop of
-- its own that runs a short main task.
local function phase_destructive(iterations)
  local names = {}
  for k in pairs(NOT_ON_DRIVER) do names[#names + 1] = k:match(":(.*)$") end
  table.sort(names)
  for _ = 1, iterations do
    local name = names[random(#names)]
    local l = lunio.new_loop()
    local args, n = random_args()
    sanitize("Loop:" .. name, args, n)
    i_call = i_call + 1
    note(("%d destructive Loop:%s(%s)"):format(i_call, name, describe_args(args, n)))
    local ok, err = pcall(l.run, l, function()
      local ok2, err2 = pcall(l[name], l, table.unpack(args, 1, n))
      record("Loop:" .. name, ok2, err2)
      for _ = 1, 3 do lunio.sleep(0) end
    end)
    if not ok then record("Loop:" .. name .. " (run)", false, err) end
    pcall(l.set_virtual_time, l, false)
    l:close()
  end
end

local function healthy()
  run_loop(function()
    assert(lunio.spawn(function() lunio.sleep(0.001) return 5 end):await() == 5)
    local s <close> = lunio.http.Session()
    assert(s:get(BASE .. "/small.txt").status == 200)
    lunio.fs.write_file(TMP .. "/health", "ok")
    assert(lunio.fs.read_file(TMP .. "/health") == "ok")
    assert(lunio.to_thread(function(a) return a + 1 end, 1) == 2)
    local q = lunio.Queue()
    q:put(1)
    assert(q:get() == 1)
  end)
end

-- ---------------------------------------------------------------------------

local t0 = os.clock()
local ctx = {}
run_loop(function()
  TMP = lunio.fs.mkdtemp(CWD .. "/data-") -- removed with CWD
  discover(ctx)
end)
S.line(("seed=%d iterations=%d targets=%d"):format(SEED, ITER, count_targets()))

local direct = ITER // 10
local destructive = ITER // 20
lunio.set_exception_handler(quiet_handler)
phase_direct(direct)
S.line("phase direct", { calls = direct })
local orphaned = orphans()
lunio.set_exception_handler(quiet_handler)
run_loop(function()
  phase_loop(ITER - direct - destructive, ctx, orphaned)
  if ctx.server then ctx.server:close() end
end)
S.line("phase loop", { calls = ITER - direct - destructive })
phase_destructive(destructive)
S.line("phase destructive", { calls = destructive })
lunio.set_exception_handler(nil)
collectgarbage()
collectgarbage()
healthy()
os.execute("rm -rf " .. S.shell_quote(TMP))

for _, class in ipairs({ "other", "defect" }) do
  local list = {}
  for msg, c in pairs(messages[class]) do list[#list + 1] = { msg, c } end
  table.sort(list, function(a, b) return a[2] > b[2] end)
  for i = 1, math.min(#list, class == "defect" and 100 or 40) do
    S.line(("%s %5d  %s"):format(class, list[i][2], list[i][1]))
  end
end
for _, hang in ipairs(hangs) do S.line("hang " .. hang) end
counts.calls = i_call
counts.reports = reports
counts.hangs = #hangs
counts.cpu = os.clock() - t0
S.line("summary", counts)
trace:close()
if #hangs > 0 or counts.defect > 0 then
  error(("fuzz: %d hang(s), %d defect(s)"):format(#hangs, counts.defect), 0)
end
S.line("ok")
