--- lunio.subprocess: child processes for tasks, in the style of asyncio's
--- create_subprocess_exec and Python's subprocess.run.
--
--   local subprocess = require "lunio.subprocess"
--   local r = subprocess.run({ "git", "rev-parse", "HEAD" }, { check = true })
--   print(r.stdout)
--
-- The child's handle, its exit and the SIGKILL timer live in C
-- (src/process.c); pipes are lunio.Streams (src/stream.c). This file owns
-- the policies: argument checking, communicate (feeding stdin while both
-- outputs are read), what cancellation does to a child (SIGTERM, SIGKILL
-- after kill_grace, reaped before the cancellation propagates), and run
-- with its timeout and check. It must not require "lunio" at load time
-- (lunio's init.lua loads it lazily). Reference and guide:
-- docs/subprocess.md.
local core = require "lunio.core"
local util = require "lunio.util"

local P = core.process
local spawn_process, signum, can_wait = P.spawn, P.signum, P.can_wait
local spawn, join = core.spawn, core.join
local new_error, is_error = core.new_error, core.is_error
local running_task = util.running_task

local type, error, pcall, pairs, ipairs = type, error, pcall, pairs, ipairs
local setmetatable, tostring = setmetatable, tostring
local math_type, concat, sort = math.type, table.concat, table.sort

local M = {}

-- Bytes asked of a pipe per read in communicate (a read returns what is
-- there, up to the stream's read high-water mark and a bit).
local READ_CHUNK = 1 << 20
local DEFAULT_GRACE = 2
local SIGTERM = signum("SIGTERM")

---@class lunio.subprocess.Opts
---Working directory of the child (default: ours).
---@field cwd? string
---The child's whole environment, name -> value (default: ours). To extend
---ours: `local env = subprocess.environ(); env.X = "1"`.
---@field env? table<string, string|number>
---"inherit" (default), "pipe" or "null".
---@field stdin? "inherit"|"pipe"|"null"
---@field stdout? "inherit"|"pipe"|"null"
---@field stderr? "inherit"|"pipe"|"null"
---Seconds between SIGTERM and SIGKILL when lunio stops the child (default 2).
---@field kill_grace? number

---@class lunio.subprocess.RunOpts: lunio.subprocess.Opts
---Written to stdin, which is then closed (stdin defaults to "pipe" then).
---@field input? string
---Seconds before the child is stopped and kind "timeout" raised.
---@field timeout? number
---Raise kind "process_failed" unless the child exits with code 0.
---@field check? boolean

---@class lunio.subprocess.Result
---@field code integer? the exit code, or nil when a signal ended the child
---@field signal string? the name of that signal ("SIGTERM"), or nil
---@field stdout string? what the child wrote, when captured
---@field stderr string? what the child wrote to stderr, when captured

-- ---------------------------------------------------------------------------
-- argument checks: each returns the checked value, or nil and a message;
-- the public functions raise with the level of their caller.

local function bad(n, fname, msg)
  return ("bad argument #%d to '%s' (%s)"):format(n, fname, msg)
end

local function to_arg(v)
  if type(v) == "string" then return v end
  if math_type(v) == "integer" then return ("%d"):format(v) end
  if type(v) == "number" then return tostring(v) end
  return nil
end

-- A copy of argv (a non-empty list of strings; numbers are converted).
local function check_argv(argv)
  if type(argv) ~= "table" then
    return nil, "argv must be a list of strings, got " .. type(argv)
  end
  local n = #argv
  if n == 0 then return nil, "argv is empty (it needs at least the program)" end
  local copy = {}
  for k in pairs(argv) do
    if math_type(k) ~= "integer" or k < 1 or k > n then
      return nil, "argv must be a list (key " .. tostring(k) .. ")"
    end
  end
  for i = 1, n do
    local s = to_arg(argv[i])
    if s == nil then
      return nil, ("argv[%d] must be a string, got %s"):format(i, type(argv[i]))
    end
    if s:find("\0", 1, true) then
      return nil, ("argv[%d] contains a NUL byte"):format(i)
    end
    copy[i] = s
  end
  if copy[1] == "" then return nil, "argv[1] (the program) is empty" end
  return copy
end

local STDIO = { inherit = true, pipe = true, null = true }

local seconds = util.is_seconds

local checks = {
  cwd = function(v)
    if type(v) ~= "string" then return "opts.cwd must be a string" end
    if v == "" then return "opts.cwd is empty" end
    if v:find("\0", 1, true) then return "opts.cwd contains a NUL byte" end
  end,
  env = function(v)
    if type(v) ~= "table" then return "opts.env must be a table (name -> value)" end
    for name, value in pairs(v) do
      if type(name) ~= "string" or name == "" or name:find("[=%z]") then
        return ("opts.env: bad name %q (names are non-empty, without '=' "
          .. "or NUL)"):format(tostring(name))
      end
      local s = to_arg(value)
      if s == nil then
        return ("opts.env.%s must be a string, got %s"):format(name, type(value))
      end
      if s:find("\0", 1, true) then
        return ("opts.env.%s contains a NUL byte"):format(name)
      end
    end
  end,
  kill_grace = function(v)
    if not seconds(v) then return "opts.kill_grace must be a number of seconds >= 0" end
  end,
  timeout = function(v)
    if not seconds(v) then return "opts.timeout must be a number of seconds >= 0" end
  end,
  input = function(v)
    if type(v) ~= "string" then return "opts.input must be a string" end
  end,
  check = function(v)
    if type(v) ~= "boolean" then return "opts.check must be a boolean" end
  end,
}
for _, name in ipairs { "stdin", "stdout", "stderr" } do
  checks[name] = function(v)
    if not STDIO[v] then
      return ("opts.%s must be \"inherit\", \"pipe\" or \"null\", got %s"):format(
        name, type(v) == "string" and ("%q"):format(v) or type(v))
    end
  end
end

local EXEC_OPTS = { cwd = true, env = true, stdin = true, stdout = true, stderr = true,
  kill_grace = true }
local RUN_OPTS = { cwd = true, env = true, stdin = true, stdout = true, stderr = true,
  kill_grace = true, input = true, timeout = true, check = true }

local EMPTY = {}

local function check_opts(opts, known)
  if opts == nil then return EMPTY end
  if type(opts) ~= "table" then return nil, "table expected, got " .. type(opts) end
  for k, v in pairs(opts) do
    if not known[k] then return nil, "unknown option '" .. tostring(k) .. "'" end
    local msg = checks[k](v)
    if msg then return nil, msg end
  end
  return opts
end

-- opts.env as the list of "NAME=value" strings uv_spawn takes (sorted, so
-- that a child sees the same order every time).
local function env_list(env)
  if env == nil then return nil end
  local list = {}
  for name, value in pairs(env) do list[#list + 1] = name .. "=" .. to_arg(value) end
  sort(list)
  return list
end

-- argv as people read it, for messages ("sleep 10"), shortened.
local function command_line(argv)
  local parts = {}
  for i = 1, #argv do
    local a = argv[i]
    parts[i] = (a == "" or a:find("[%s'\"\\]")) and ("%q"):format(a) or a
  end
  local s = concat(parts, " ")
  if #s > 80 then s = s:sub(1, 77) .. "..." end
  return s
end

-- ---------------------------------------------------------------------------
-- Process

---A running (or finished) child process (`subprocess.exec`). `stdin`,
---`stdout` and `stderr` are lunio.Streams for the streams that were
---piped, nil otherwise. `<close>`-able: closing kills a child still
---running (SIGTERM, SIGKILL after kill_grace) and reaps it.
---@class lunio.Process
---@field pid integer the child's process id
---@field argv string[] the command (a copy)
---@field stdin lunio.Stream? write to the child (when piped)
---@field stdout lunio.Stream? read what the child writes (when piped)
---@field stderr lunio.Stream? read the child's stderr (when piped)
local Process = {}
local ProcessMT = { __index = Process, __name = "lunio.Process" }

local function exited(h)
  local code, sig = h:poll()
  return code ~= nil or sig ~= nil
end

local function close_pipes(self)
  if self.stdin then self.stdin:close() end
  if self.stdout then self.stdout:close() end
  if self.stderr then self.stderr:close() end
end

-- Ends the child and waits until it is reaped: SIGTERM now, SIGKILL when
-- kill_grace runs out (a timer in C, so it fires whatever happens to this
-- task). A cancellation arriving meanwhile cannot cut the wait short: it
-- makes the SIGKILL go at once, and is returned so that the caller raises
-- it after the cleanup. Where no task can wait (a __gc, the main thread),
-- SIGKILL and a blocking reap.
local function stop(self)
  local h = self._h
  if exited(h) then return nil end
  if not can_wait() then
    h:close()
    return nil
  end
  h:terminate(self._grace)
  local late
  while true do
    local ok, err = pcall(h.wait, h)
    if ok then return late end
    if not is_error(err, "cancelled") then -- this process is another loop's
      h:close()
      return late
    end
    late = late or err
    h:terminate(0)
  end
end

-- Cancels the helper tasks still running and waits for all of them to be
-- done, whatever happens meanwhile; returns a cancellation of our own
-- that arrived during the wait, if any.
local function settle(tasks)
  local pending = {}
  for _, t in ipairs(tasks) do
    if not t:done() then
      t:cancel()
      pending[#pending + 1] = t
    end
  end
  if #pending == 0 then return nil end
  local j = join("communicate", "all", pending, #pending, true)
  local late
  while true do
    local ok, err = j:wait()
    if ok then break end
    late = late or err
  end
  j:close()
  return late
end

-- Helper task: every chunk of `stream` into `chunks`, up to EOF.
local function collect(stream, chunks)
  while true do
    local data = stream:read(READ_CHUNK)
    if data == nil then return end
    chunks[#chunks + 1] = data
  end
end

-- Helper task: writes `input` and closes stdin (the child sees EOF). A
-- child that exits or closes its stdin before reading everything is not
-- an error (as in Python): the rest is dropped.
local function feed(stream, input)
  local ok, err = pcall(function()
    if input ~= nil and input ~= "" then
      stream:write(input)
      stream:drain()
    end
  end)
  stream:close()
  if not ok and not (is_error(err, "epipe") or is_error(err, "econnreset")) then
    error(err, 0)
  end
end

-- What communicate gathered in sink: stdout and stderr as strings, each
-- nil when that stream is not a pipe.
local function outputs(p, sink)
  return p.stdout and concat(sink.stdout) or nil, p.stderr and concat(sink.stderr) or nil
end

-- The body of communicate and run: feeds stdin, reads stdout and stderr
-- into sink.stdout / sink.stderr (lists of chunks), all at once, then
-- waits for the exit. Any failure (a cancellation, a read error) stops
-- the child and reaps it before it is raised. Returns code, signal.
local function communicate(self, input, sink)
  local h = self._h
  local tasks = {}
  if self.stdin then tasks[#tasks + 1] = spawn(feed, self.stdin, input) end
  if self.stdout then tasks[#tasks + 1] = spawn(collect, self.stdout, sink.stdout) end
  if self.stderr then tasks[#tasks + 1] = spawn(collect, self.stderr, sink.stderr) end
  local err
  if #tasks > 0 then
    -- every output at EOF and stdin written (or the first helper failure)
    local j = join("communicate", "first_error", tasks, #tasks, true)
    local ok, cancel = j:wait()
    j:close()
    if not ok then
      err = cancel
    else
      for _, t in ipairs(tasks) do
        if err == nil and t:done() then err = t:error() end
      end
    end
  end
  local code, sig
  if err == nil then
    local ok, c, s = pcall(h.wait, h)
    if ok then code, sig = c, s else err = c end
  end
  if err ~= nil then
    local late = settle(tasks)
    late = stop(self) or late
    close_pipes(self)
    if not is_error(err, "cancelled") and late then err = late end
    error(err, 0)
  end
  close_pipes(self)
  return code, sig
end

---Waits for the child to exit: `code, nil`, or `nil, signal` ("SIGTERM")
---when a signal ended it. Returns at once when it exited already.
---Cancelling the wait stops the child (SIGTERM, SIGKILL after
---kill_grace) and reaps it before the cancellation propagates. Does not
---read the pipes: a child that fills a pipe nobody reads never exits
---(use communicate).
---@async
---@return integer? code
---@return string? signal
function Process:wait()
  local h = self._h
  local ok, code, sig = pcall(h.wait, h)
  if ok then return code, sig end
  if is_error(code, "cancelled") then stop(self) end
  error(code, 0)
end

---Sends a signal: a name ("SIGTERM", the default; "SIGKILL", "SIGINT"
---...) or a number. Returns true when sent, false when the child exited
---already (nothing is sent then: its pid may be another process's now).
---@param sig? string|integer
---@return boolean
function Process:kill(sig)
  local n
  if sig == nil then
    n = SIGTERM
  elseif type(sig) == "string" then
    n = signum(sig)
    if n == nil then
      error(bad(1, "kill", ("unknown signal '%s' (names look like 'SIGTERM')")
        :format(sig)), 2)
    end
  elseif math_type(sig) == "integer" then
    if sig < 0 or sig > 64 then error(bad(1, "kill", "not a signal number"), 2) end
    n = sig
  else
    error(bad(1, "kill", "signal name or number expected, got " .. type(sig)), 2)
  end
  return self._h:kill(n)
end

---How the child ended, without waiting: `code, nil` or `nil, signal`;
---nothing while it runs.
---@return integer? code
---@return string? signal
function Process:poll()
  return self._h:poll()
end

---Writes `input` (if any) to stdin and closes it, reads stdout and stderr
---to their end at the same time, and waits for the exit: returns
---`stdout, stderr, code, signal` (outputs that are not piped are nil).
---Returns only once the child exited and every piped output reached its
---end. Cancelling it (or a failure) stops the child and reaps it first.
---Once per process.
---@async
---@param input? string
---@return string? stdout
---@return string? stderr
---@return integer? code
---@return string? signal
function Process:communicate(input)
  if input ~= nil and type(input) ~= "string" then
    error(bad(1, "communicate", "string expected, got " .. type(input)), 2)
  end
  if input ~= nil and input ~= "" and not self.stdin then
    error(bad(1, "communicate", "input given but stdin is not a pipe "
      .. "(exec with opts.stdin = \"pipe\")"), 2)
  end
  running_task("communicate")
  if self._closed then error(new_error("closed", "the process was closed"), 2) end
  if self._communicated then
    error(new_error("invalid_state", "communicate was called already"), 2)
  end
  self._communicated = true
  local sink = { stdout = {}, stderr = {} }
  local code, sig = communicate(self, input, sink)
  local out, err = outputs(self, sink)
  return out, err, code, sig
end

---Closes the pipes and, if the child still runs, stops it (SIGTERM,
---SIGKILL after kill_grace) and reaps it. In a task this waits for the
---exit; elsewhere (the main thread, a finalizer) the child gets SIGKILL
---and is reaped at once. Idempotent; `<close>` calls it.
---@async
function Process:close()
  if self._closed then return end
  self._closed = true
  close_pipes(self)
  local late = stop(self)
  self._h:close()
  if late then error(late, 0) end
end

ProcessMT.__close = Process.close

function ProcessMT:__tostring()
  return tostring(self._h)
end

-- Starts argv with checked opts; returns the Process.
local function start(argv, opts)
  local h, i, o, e = spawn_process(argv[1], argv, opts.cwd, env_list(opts.env),
    opts.stdin or "inherit", opts.stdout or "inherit", opts.stderr or "inherit")
  return setmetatable({
    pid = h:pid(), argv = argv, stdin = i, stdout = o, stderr = e,
    _h = h, _grace = opts.kill_grace or DEFAULT_GRACE,
  }, ProcessMT)
end

-- Checks the (argv, opts) of exec and run; errors point at their caller.
local function check_call(fname, argv, opts, known)
  local list, msg = check_argv(argv)
  if not list then error(bad(1, fname, msg), 3) end
  opts, msg = check_opts(opts, known)
  if not opts then error(bad(2, fname, msg), 3) end
  return list, opts
end

-- Runs start(), adding .argv to a failure to start (kind "enoent" ...).
local function start_checked(argv, opts)
  local ok, p = pcall(start, argv, opts)
  if ok then return p end
  if is_error(p) then p.argv = argv end
  error(p, 0)
end

---Starts `argv[1]` with the arguments `argv` (no shell; the program is
---looked up in PATH unless it contains a "/"). Returns a Process. A
---program that cannot be started raises its libuv error kind ("enoent",
---"eacces" ...) with `.path` (and `.argv`); nothing is left behind then.
---@param argv string[]
---@param opts? lunio.subprocess.Opts
---@return lunio.Process
function M.exec(argv, opts)
  local list
  list, opts = check_call("exec", argv, opts, EXEC_OPTS)
  return start_checked(list, opts)
end

local function finish_run(p, opts, sink, ok, code, sig)
  local out, err = outputs(p, sink)
  p:close()
  if not ok then
    local e = code
    if is_error(e, "timeout") then
      e.message = ("command '%s' timed out after %g s"):format(command_line(p.argv),
        opts.timeout)
      e.argv, e.timeout, e.stdout, e.stderr = p.argv, opts.timeout, out, err
    end
    error(e, 0)
  end
  if opts.check and code ~= 0 then
    local e = new_error("process_failed", sig
      and ("command '%s' was killed by %s"):format(command_line(p.argv), sig)
      or ("command '%s' exited with code %d"):format(command_line(p.argv), code))
    e.argv, e.code, e.signal, e.stdout, e.stderr = p.argv, code, sig, out, err
    error(e, 0)
  end
  return { code = code, signal = sig, stdout = out, stderr = err }
end

---Runs `argv` to its end and returns `{code=, signal=, stdout=, stderr=}`.
---stdout and stderr are captured (strings) unless opts say "inherit" or
---"null" (then nil); `opts.input` is written to stdin. `opts.timeout`
---stops the child when it runs out (SIGTERM, SIGKILL after kill_grace),
---reaps it and raises kind "timeout" (with `.stdout` and `.stderr` read so
---far). `opts.check` raises kind "process_failed" (`.code`, `.signal`,
---`.stdout`, `.stderr`) unless the exit code is 0.
---@async
---@param argv string[]
---@param opts? lunio.subprocess.RunOpts
---@return lunio.subprocess.Result
function M.run(argv, opts)
  local list
  list, opts = check_call("run", argv, opts, RUN_OPTS)
  if opts.input ~= nil and opts.stdin ~= nil and opts.stdin ~= "pipe" then
    error(bad(2, "run", "opts.input needs opts.stdin = \"pipe\" (the default with input)"), 2)
  end
  running_task("run")
  local o = {
    cwd = opts.cwd, env = opts.env, kill_grace = opts.kill_grace,
    stdin = opts.stdin or (opts.input ~= nil and "pipe" or "inherit"),
    stdout = opts.stdout or "pipe",
    stderr = opts.stderr or "pipe",
  }
  local p = start_checked(list, o)
  p._communicated = true
  local sink = { stdout = {}, stderr = {} }
  return finish_run(p, opts, sink,
    pcall(util.within, opts.timeout, communicate, p, opts.input, sink))
end

---A copy of this process's environment (name -> value), for extending it:
---`local env = subprocess.environ(); env.LANG = "C"; exec(argv, {env = env})`.
---@return table<string, string>
M.environ = P.environ

return M
