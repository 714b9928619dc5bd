-- Shared helpers for the core specs.
--
--   local h = require "helper"
--   h.run(fn, ...)         run fn as the main task of a fresh loop
--   h.new_loop()           a new loop that stops itself if it stalls (1 s)
--   h.guard_default()      the same for the default loop (before_each)
--   h.lua(script, args)    run lua5.4 in a subprocess -> stdout, stderr, code
--   h.lunio(args)          run the lunio command (bin/lunio) the same way
--   h.async(fn, opts)     lunio.testing.async with a 1 s default timeout
--   h.catch(fn, ...)       the error fn raises (fails when it does not)
--   h.reports(match)       capture the exception handler's reports
local lunio = require "lunio"
local core = require "lunio.core"

local helper = {}

-- A stalled loop must fail a spec, not hang the suite. Loops made by
-- helper.new_loop() (and the default loop, between helper.guard_default()
-- and helper.unguard_default()) stop themselves after `guard_seconds` of
-- real time; run() then raises because its main task did not finish.
-- Uses the loop's watchdog (the timer lunio.testing uses) when it exists.
--
-- Under valgrind (make check-valgrind) everything runs ~20x slower, and a
-- bit slower under GC stress: time limits are scaled by helper.time_scale.
local preload = os.getenv("LD_PRELOAD") or ""
helper.time_scale = (preload:find("vgpreload", 1, true) and 20 or 1)
  * ((os.getenv("LUNIO_GC_STRESS") or "0") ~= "0" and 3 or 1)
helper.guard_seconds = 1 * helper.time_scale

local function guard(loop)
  if loop.set_watchdog then
    loop:set_watchdog(helper.guard_seconds, function() loop:stop() end)
  end
  return loop
end

---lunio.new_loop() with a watchdog that stops it after guard_seconds.
function helper.new_loop()
  return guard(lunio.new_loop())
end

---For before_each: guard the default loop (used by lunio.run).
function helper.guard_default()
  local loop = core.default_loop()
  -- libuv counts timers from its cached loop time, stale since this loop
  -- last ran: a short run refreshes it so the guard does not fire at once
  if not loop:is_running() then loop:run(function() end) end
  guard(loop)
end

---For after_each: disarm the default loop's guard.
function helper.unguard_default()
  local loop = core.default_loop()
  if loop.set_watchdog then loop:set_watchdog(nil) end
end

---Runs `fn(...)` as the main task of a fresh loop (`lunio.new_loop():run`)
---and returns its results. The loop is closed afterwards. Errors are
---re-raised unchanged: string errors already carry the failing task's
---traceback, table errors carry it in `.traceback`.
function helper.run(fn, ...)
  local loop = helper.new_loop()
  local res = table.pack(pcall(loop.run, loop, fn, ...))
  loop:close()
  if not res[1] then
    local err = res[2]
    if type(err) == "string" and not err:find("stack traceback:", 1, true) then
      err = debug.traceback(err, 2)
    end
    error(err, 0)
  end
  return table.unpack(res, 2, res.n)
end

---`lunio.testing.async(fn, opts)` with a 1 s default time limit: the core
---specs only sleep for milliseconds, so a stalled loop fails fast.
function helper.async(fn, opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.timeout = (o.timeout or 1) * helper.time_scale
  local test = lunio.testing.async(fn, o)
  return function(...)
    local t0 = lunio.now()
    test(...)
    -- A body that finished only because the watchdog woke a stalled loop
    -- would pass otherwise (the watchdog's cancel comes too late to hurt).
    local took = lunio.now() - t0
    if took >= o.timeout then
      error(("test passed but took %.2f s (time limit %g s): the loop stalled")
        :format(took, o.timeout), 0)
    end
  end
end

---Calls `fn(...)`, expects it to raise, and returns the error value.
function helper.catch(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error, got success")
  return err
end

---Calls `fn(...)` and returns the error message as a string (tostring).
function helper.errmsg(fn, ...)
  return tostring(helper.catch(fn, ...))
end

---Replaces the global exception handler with a collector. Returns the list
---the contexts are appended to; `helper.restore_handler()` puts the default
---back (call it in after_each / finally). Specs share one Lua state, so
---other specs' lost tasks may be reported meanwhile: `match` keeps only
---the reports whose error is `match` (a table), contains `match` (a
---string), or satisfies `match(ctx)` (a function).
function helper.reports(match)
  local list = {}
  lunio.set_exception_handler(function(ctx)
    local keep
    if match == nil or rawequal(ctx.error, match) then
      keep = true
    elseif type(match) == "string" then
      keep = tostring(ctx.error):find(match, 1, true) ~= nil
    elseif type(match) == "function" then
      keep = match(ctx)
    end
    if keep then list[#list + 1] = ctx end
  end)
  return list
end

function helper.restore_handler()
  lunio.set_exception_handler(nil)
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helper.shell_quote = shell_quote

local cwd
local function getcwd()
  if not cwd then
    local p = assert(io.popen("pwd"))
    cwd = p:read("l")
    p:close()
  end
  return cwd
end

helper.getcwd = getcwd

-- Makes the relative entries of a package path absolute, so the child finds
-- the same modules whatever its working directory.
local function absolute_path(path)
  local parts = {}
  for entry in path:gmatch("[^;]+") do
    if entry:sub(1, 1) ~= "/" and entry:find("?", 1, true) then
      entry = getcwd() .. "/" .. entry:gsub("^%./", "")
    end
    parts[#parts + 1] = entry
  end
  return table.concat(parts, ";")
end
helper.absolute_path = absolute_path

---Lua source that defines `pid()` (this process, read from /proc/self/stat)
---and `kill(sig)` (sends sig to this process), for the specs and child
---scripts that send themselves signals. Not os.execute: system() ignores
---SIGINT and blocks SIGCHLD in the caller while the command runs.
helper.kill_self_source = [[
local function pid()
  local f = assert(io.open("/proc/self/stat"))
  local s = f:read("a")
  f:close()
  return s:match("^(%d+)")
end
local function kill(sig)
  local p = assert(io.popen("kill -" .. sig .. " " .. pid()))
  p:close()
end
]]
helper.pid, helper.kill_self = assert(load(helper.kill_self_source .. "return pid, kill"))()

---Prelude of child scripts that interrupt themselves: lunio, pid(), kill()
---and interrupt(delay), a task that sends SIGINT to the process after delay.
helper.interrupt_prelude = 'local lunio = require "lunio"\n' .. helper.kill_self_source .. [[
local function interrupt(delay)
  return lunio.create_task(function()
    lunio.sleep(delay)
    kill("INT")
  end)
end
]]

local function read_all(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end
helper.read_all = read_all -- the file's bytes, or "" when it cannot be read

---The environment assignments (`LUA_PATH=... LUA_CPATH=...`, shell-quoted)
---that make a child lua5.4 load the same lunio as this process.
function helper.lua_env()
  return "LUA_PATH=" .. shell_quote(absolute_path(package.path))
    .. " LUA_CPATH=" .. shell_quote(absolute_path(package.cpath))
end

---A new temporary path made by mktemp(1): "/tmp/<name>.XXXXXX" filled in;
---`flag` "-d" makes a directory, "-u" only picks a free name.
function helper.mktemp(name, flag)
  local p = assert(io.popen("mktemp " .. (flag or "") .. " /tmp/" .. name .. ".XXXXXX"))
  local path = p:read("l")
  p:close()
  assert(path and path ~= "", "mktemp failed")
  return path
end

local function write_temp(text)
  local name = os.tmpname()
  local f = assert(io.open(name, "wb"))
  f:write(text)
  f:close()
  return name
end

-- Runs `lua5.4 path args...` with the environment of helper.lua_env().
local function run_lua(path, args, opts)
  opts = opts or {}
  local out, err = os.tmpname(), os.tmpname()
  local stdin = opts.stdin and write_temp(opts.stdin)
  local argv = {}
  for i, a in ipairs(args or {}) do argv[i] = shell_quote(a) end
  local env = { helper.lua_env() }
  for k, v in pairs(opts.env or {}) do env[#env + 1] = k .. "=" .. shell_quote(v) end
  local run = ("lua5.4 %s %s"):format(shell_quote(path), table.concat(argv, " "))
  if opts.signal then
    -- {name, after}: send SIG<name> to the script (not through timeout(1),
    -- which does not reliably pass signals on) `after` seconds in
    run = ("sh -c %s"):format(shell_quote(("%s & p=$!; sleep %g; kill -%s $p; wait $p")
      :format(run, opts.signal[2], opts.signal[1])))
  end
  local cmd = ("env %s timeout -s KILL %g %s <%s >%s 2>%s"):format(
    table.concat(env, " "), opts.timeout or 10, run, stdin or "/dev/null", out, err)
  local p = assert(io.popen(cmd))
  p:read("a")
  local _, how, code = p:close()
  if how == "signal" then code = 128 + code end
  local stdout, stderr = read_all(out), read_all(err)
  os.remove(out)
  os.remove(err)
  if stdin then os.remove(stdin) end
  return stdout, stderr, code
end

---Runs lua5.4 in a subprocess with this process's package.path and
---package.cpath (so the same build of lunio.core is loaded). Standard input
---is /dev/null, or a file holding `opts.stdin`.
---@param script string a path to a .lua file, or Lua source code
---@param args? string[] command-line arguments for the script
---`opts.signal = {"TERM", 0.5}` sends SIGTERM to the script 0.5 s in.
---@param opts? {timeout?: number, env?: table<string,string>, stdin?: string, signal?: table}
---@return string stdout, string stderr, integer code (128+n for signal n)
function helper.lua(script, args, opts)
  local path = script
  local tmp_script
  if not (script:match("%.lua$") and not script:find("\n") and io.open(script)) then
    tmp_script = write_temp(script)
    path = tmp_script
  end
  local stdout, stderr, code = run_lua(path, args, opts)
  if tmp_script then os.remove(tmp_script) end
  return stdout, stderr, code
end

---Runs the `lunio` command (bin/lunio of this checkout, under lua5.4) with
---`args`, as helper.lua does; same options and results.
---@param args? string[]
---@param opts? {timeout?: number, env?: table<string,string>, stdin?: string}
---@return string stdout, string stderr, integer code
function helper.lunio(args, opts)
  return run_lua(getcwd() .. "/bin/lunio", args, opts)
end

---Seconds of CPU time used by `fn(...)` and its wall-clock duration.
function helper.cost(fn, ...)
  local c0, t0 = os.clock(), lunio.now()
  fn(...)
  return os.clock() - c0, lunio.now() - t0
end

-- Lets every ready task run until all are parked again (n ticks).
function helper.settle(n)
  for _ = 1, n or 3 do lunio.sleep(0) end
end

-- Calls f(...), which must fail; returns the lunio error's kind (or the
-- error itself as a string) and the error.
function helper.kind_and_error(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error")
  return lunio.is_error(err) and err.kind or tostring(err), err
end

-- The kind alone (one value: assertions take a second one as a message).
function helper.kind_of(f, ...)
  return (helper.kind_and_error(f, ...))
end

-- In a task: waits (polling) until fn() is true; fails after a second
-- (scaled), naming `what`.
function helper.eventually(fn, what)
  local deadline = lunio.now() + 1 * helper.time_scale
  while not fn() do
    if lunio.now() > deadline then error("timed out waiting for " .. what, 2) end
    lunio.sleep(0.005)
  end
end

return helper
