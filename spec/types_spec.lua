-- The LuaLS definitions in types/ cover the whole public API: every public
-- function and field reachable from `require "lunio"` (with its lazily
-- loaded parts), lunio.http, lunio.testing, lunio.coroutine and the methods
-- of every class has a definition, and every function defined there exists.
-- A new public function without a definition fails this spec.
local lunio = require "lunio"
local nginx = require "support.nginx"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- Parses types/*.lua (the subset of LuaLS annotations they use):
-- `---@class Name[: Parent, ...]` followed by `---@field name` lines and a
-- `local Var = ...` line binds Var to the class; then `function Var.name(`,
-- `function Var:name(` (functions) and `Var.name =` (fields) define names.
-- Returns classes: name -> {parents = {...}, names = {name -> "function"|"field"}}.
local function parse_types()
  local classes = {}
  local function class(name)
    local c = classes[name]
    if not c then
      c = { parents = {}, names = {} }
      classes[name] = c
    end
    return c
  end
  local p = assert(io.popen("ls types/*.lua"))
  for path in p:lines() do
    local var_class, pending = {}, nil
    for line in (read(path) .. "\n"):gmatch("([^\n]*)\n") do
      local cname, rest = line:match("^%-%-%-@class%s+([%w_%.]+)%s*(.*)$")
      if cname then
        pending = cname
        for parent in (rest:match("^:%s*(.*)$") or ""):gmatch("[%w_%.]+") do
          table.insert(class(cname).parents, parent)
        end
        class(cname)
      elseif line:match("^%-%-") then
        local field = line:match("^%-%-%-@field%s+([%w_]+)")
        if field and pending then class(pending).names[field] = "field" end
      else
        local var = line:match("^local%s+([%w_]+)%s*=")
        if var and pending then var_class[var] = pending end
        pending = nil
        local v, name = line:match("^function%s+([%w_]+)[%.:]([%w_]+)%s*%(")
        if v and var_class[v] then class(var_class[v]).names[name] = "function" end
        v, name = line:match("^([%w_]+)%.([%w_]+)%s*=")
        if v and var_class[v] then class(var_class[v]).names[name] = "field" end
      end
    end
  end
  p:close()
  return classes
end

local function defined(classes, cname, name, seen)
  local c = classes[cname]
  if not c then return false end
  if c.names[name] then return true end
  seen = seen or {}
  if seen[cname] then return false end
  seen[cname] = true
  for _, parent in ipairs(c.parents) do
    if defined(classes, parent, name, seen) then return true end
  end
  return false
end

-- The public (not "_"-prefixed) string keys of `t`, raw (no __pairs).
local function public_names(t, out)
  out = out or {}
  for k in next, t do
    if type(k) == "string" and k:sub(1, 1) ~= "_" then out[k] = true end
  end
  return out
end

-- The methods table behind an object's __index (a table, or the first
-- upvalue of a C __index function, as for Tasks and Futures).
local function methods_of(obj)
  local index = getmetatable(obj).__index
  if type(index) == "function" then index = select(2, debug.getupvalue(index, 1)) end
  assert(type(index) == "table", "no methods table for " .. tostring(obj))
  return index
end

-- Forces every lazily loaded part of `lunio` (the lists in init.lua).
local function force_lazy()
  local src = read("lua/lunio/init.lua")
  local lazy = assert(src:match("\nlocal lazy = (%b{})"), "no `local lazy` in init.lua")
  local sets = assert(src:match("\nlocal lazy_sets = (%b{})"), "no `lazy_sets` in init.lua")
  local n = 0
  for name in lazy:gmatch("([%w_]+) = function") do
    assert(lunio[name] ~= nil, name)
    n = n + 1
  end
  for mod in sets:gmatch('"([%w_%.]+)"') do
    for k in pairs(require(mod)) do assert(lunio[k] ~= nil, k) end
    n = n + 1
  end
  assert(n >= 4, "init.lua's lazy lists not understood")
end

-- class name -> set of public runtime names, gathered from live objects.
local function runtime_api(srv)
  force_lazy()
  local http = lunio.http
  local api = {
    ["lunio"] = public_names(lunio),
    ["lunio.http"] = public_names(http),
    ["lunio.testing"] = public_names(lunio.testing),
    ["lunio.coroutine"] = public_names(lunio.coroutine),
    ["lunio.Error"] = public_names(lunio.error("k", "m")),
    ["lunio.http.Headers"] = public_names(http.Headers),
    ["lunio.fs"] = public_names(lunio.fs),
    ["lunio.signal"] = public_names(lunio.signal),
    ["lunio.stream"] = public_names(lunio.stream),
    ["lunio.subprocess"] = public_names(lunio.subprocess),
  }
  api["lunio"]._VERSION = true
  local loop = lunio.new_loop()
  api["lunio.Loop"] = public_names(methods_of(loop))
  local handle = loop:call_soon(print)
  api["lunio.Handle"] = public_names(methods_of(handle))
  handle:cancel()
  loop:run(function()
    local task = lunio.spawn(print)
    api["lunio.Task"] = public_names(methods_of(task), { name = true })
    task:await()
    api["lunio.Future"] = public_names(methods_of(lunio.Future()))
    api["lunio.Event"] = public_names(methods_of(lunio.Event()))
    local lock = lunio.Lock()
    api["lunio.Lock"] = public_names(methods_of(lock))
    local guard <close> = lock:acquire()
    api["lunio.Guard"] = public_names(methods_of(guard))
    api["lunio.Semaphore"] = public_names(methods_of(lunio.BoundedSemaphore(1)),
      public_names(methods_of(lunio.Semaphore(1))))
    api["lunio.Condition"] = public_names(methods_of(lunio.Condition()))
    local q = lunio.Queue()
    api["lunio.Queue"] = public_names(q, public_names(methods_of(q)))
    for _, kind in ipairs({ "LifoQueue", "PriorityQueue" }) do
      public_names(methods_of(lunio[kind]()), api["lunio.Queue"])
    end
    local scope <close> = lunio.timeout(nil)
    api["lunio.Timeout"] = public_names(methods_of(scope))
    local tg <close> = lunio.TaskGroup()
    api["lunio.TaskGroup"] = public_names(methods_of(tg))
    local dir = lunio.fs.mkdtemp(os.tmpname() .. "-types-")
    local file <close> = lunio.fs.open(dir .. "/f", "w")
    api["lunio.File"] = public_names(methods_of(file))
    file:close()
    lunio.fs.remove(dir .. "/f")
    lunio.fs.rmdir(dir)
    local server <close> = lunio.start_server(function() end, "127.0.0.1", 0)
    api["lunio.Server"] = public_names(server, public_names(methods_of(server)))
    local conn <close> = lunio.open_connection("127.0.0.1", server.port)
    api["lunio.Stream"] = public_names(methods_of(conn))
    local udp <close> = lunio.udp_bind("127.0.0.1", 0)
    api["lunio.UDP"] = public_names(methods_of(udp))
    conn:close()
    udp:close()
    server:close()
    local proc <close> = lunio.subprocess.exec({ "true" }, { stdout = "pipe" })
    api["lunio.Process"] = public_names(proc, public_names(methods_of(proc)))
    proc:wait()
    proc:close()
    local handler <close> = lunio.signal.on("SIGUSR2", print)
    api["lunio.SignalHandler"] = public_names(methods_of(handler))
    local session <close> = http.Session()
    api["lunio.http.Session"] = public_names(methods_of(session))
    local resp = session:get(srv:url("/small.txt"))
    api["lunio.http.Response"] = public_names(resp, public_names(methods_of(resp)))
    public_names(resp.headers, api["lunio.http.Headers"])
    public_names(methods_of(resp.headers), api["lunio.http.Headers"])
  end)
  loop:close()
  return api
end

describe("types/ (LuaLS definitions)", function()
  local srv, classes, api

  setup(function()
    srv = nginx.start()
    classes = parse_types()
    api = runtime_api(srv)
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  it("understands the definition files (the parser sees the classes)", function()
    assert.equal("function", classes["lunio"].names.run)
    assert.equal("field", classes["lunio"].names.http)
    assert.equal("function", classes["lunio.Queue"].names.iter)
    assert.equal("field", classes["lunio.Queue"].names.maxsize)
    assert.same({ "lunio.Future" }, classes["lunio.Task"].parents)
    assert.is_true(defined(classes, "lunio.Task", "await")) -- through its parent
  end)

  it("define every public name of every module and class", function()
    local missing = {}
    for cname, names in pairs(api) do
      for name in pairs(names) do
        if not defined(classes, cname, name) then
          missing[#missing + 1] = cname .. "." .. name
        end
      end
    end
    table.sort(missing)
    assert.same({}, missing)
  end)

  it("define no function that does not exist", function()
    local stale = {}
    for cname, names in pairs(api) do
      for name, how in pairs(classes[cname] and classes[cname].names or {}) do
        if how == "function" and not names[name] then
          stale[#stale + 1] = cname .. "." .. name
        end
      end
    end
    table.sort(stale)
    assert.same({}, stale)
  end)

  it("mark the functions that await as @async", function()
    -- a sample of each kind: module functions, methods, HTTP
    -- whether the doc comment right above `function fname(` says ---@async
    local function is_async(path, fname)
      local lines = {}
      for l in read(path):gmatch("[^\n]*") do lines[#lines + 1] = l end
      for i, l in ipairs(lines) do
        if l:find("function " .. fname .. "(", 1, true) == 1 then
          local j = i - 1
          while j > 0 and lines[j]:sub(1, 3) == "---" do
            if lines[j] == "---@async" then return true end
            j = j - 1
          end
          return false
        end
      end
      error("no definition of " .. fname .. " in " .. path)
    end
    for _, f in ipairs({ "lunio.sleep", "lunio.gather", "lunio.wait_for", "lunio.pcall",
      "Queue:get", "Queue:iter", "Lock:acquire", "Event:wait", "TaskGroup:wait" }) do
      assert.is_true(is_async("types/lunio.lua", f), f)
    end
    for _, f in ipairs({ "http.get", "Session:fetch", "Response:text" }) do
      assert.is_true(is_async("types/lunio.http.lua", f), f)
    end
    assert.is_false(is_async("types/lunio.lua", "lunio.now"))
  end)
end)
