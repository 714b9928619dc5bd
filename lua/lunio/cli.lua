--- lunio.cli: the `lunio` command.
--
--   lunio script.lua [args...]   run a script as the main task
--   lunio -e 'code' [args...]    run a string
--   lunio -v                     print versions
--   lunio                        a REPL on a terminal; else the script on stdin
--
-- Exit status: 0 on success, 1 when the script fails (error and traceback
-- on stderr), 130 when interrupted by SIGINT.
local lunio = require "lunio"
local core = require "lunio.core"
local util = require "lunio.util"

local cli = {}

local usage = [=[
usage: lunio [options] [script [args...]]
  -e code    run the string 'code' as the main task
  -v         print the versions of lunio, Lua, libuv and libcurl
  -h         show this help
  script     run the file as the main task ('-' reads standard input)
Top-level code runs inside a task: it may call lunio.sleep, task:await(), ...
The global 'lunio' is set for the script.
Without a script or -e: on a terminal, an interactive prompt (REPL) whose
statements may await (Ctrl-D exits); otherwise the script is read from
standard input, as with '-'.]=]

local format_error = util.format_error

-- The main task's body: marks the task so that `lunio.run(fn, ...)` in the
-- script calls fn in place (scripts written for lua5.4 run unchanged).
local function main_task(chunk, ...)
  util.run_in_place[core.current()] = true
  return chunk(...)
end

local function report(err)
  io.stderr:write("lunio: ", format_error(err), "\n")
end

local function versions()
  local v = lunio.versions()
  return ("lunio %s (%s, libuv %s, libcurl %s)"):format(v.lunio, v.lua, v.libuv, v.libcurl)
end

-- ---------------------------------------------------------------------------
-- REPL: runs as the main task, so a statement may await. Reading a line
-- blocks the whole loop (there is no asynchronous stdin yet): tasks
-- started at the prompt run only while a statement is executing.

-- Whether file descriptor `fd` is a terminal. Without core.isatty, asks
-- test(1), which inherits our descriptors.
local function isatty(fd)
  if core.isatty then return core.isatty(fd) end
  return os.execute("test -t " .. fd) == true
end

local function prompt(second)
  local p = rawget(_G, second and "_PROMPT2" or "_PROMPT")
  if type(p) ~= "string" then p = second and ">> " or "> " end
  io.stdout:write(p)
  io.stdout:flush()
  return io.stdin:read("l")
end

-- Compiles `line` as an expression to print (`return line`) if it is one,
-- else as a statement, reading more lines while the chunk is incomplete
-- (lua.c's rule: the syntax error ends at "<eof>"). Returns the chunk, or
-- nil and a syntax error, or nil at the end of input.
local function read_chunk()
  local line = prompt(false)
  if line == nil then return nil end
  local chunk = load("return " .. line .. ";", "=stdin")
  if chunk then return chunk end
  while true do
    local err
    chunk, err = load(line, "=stdin")
    if chunk then return chunk end
    if err:sub(-5) ~= "<eof>" then return nil, err end
    local more = prompt(true)
    if more == nil then return nil, err end
    line = line .. "\n" .. more
  end
end

-- The traceback of a failing statement, down to its own frames (the REPL's
-- frames below the xpcall are not the user's business).
local last_traceback
local function msgh(err)
  local tb = debug.traceback(nil, 2)
  local cut = tb:find("\n\t%[C%]: in function 'xpcall'")
  last_traceback = cut and tb:sub(1, cut - 1) or tb
  return err
end

local function print_results(ok, ...)
  if not ok then
    local text = format_error((...))
    if not text:find("stack traceback:", 1, true) and last_traceback then
      text = text .. "\n" .. last_traceback
    end
    io.stderr:write(text, "\n")
    io.stderr:flush()
  elseif select("#", ...) > 0 then
    local p = rawget(_G, "print")
    if type(p) ~= "function" then p = print end
    p(...)
  end
end

local function repl()
  io.stdout:write(versions(), "\n",
    "Statements may await (lunio.sleep(1), t:await()); Ctrl-D exits.\n")
  local me = core.current()
  local loop = core.running_loop()
  while true do
    local chunk, err = read_chunk()
    if chunk == nil then
      if err == nil then break end
      last_traceback = nil -- a syntax error has none
      print_results(false, err)
    else
      -- SIGINT cancels the statement, not the REPL (where the core applies
      -- set_signals while running; see docs/cli.md).
      loop:set_signals(true)
      last_traceback = nil
      print_results(xpcall(chunk, msgh))
      loop:set_signals(false)
      -- a cancellation of the REPL's task left pending must not hit the
      -- next statement
      while core.pending_cancel(me) ~= nil and core.uncancel(me) do end
    end
  end
  io.stdout:write("\n")
end

---Runs the command line `argv` (a list, as `arg` without negative indices)
---and returns the exit status.
---@param argv string[]
---@param progname? string
---@return integer
function cli.main(argv, progname)
  local chunk, chunkname, script_index
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "-v" or a == "--version" then
      print(versions())
      if i == #argv then return 0 end
    elseif a == "-h" or a == "--help" then
      print(usage)
      return 0
    elseif a == "-e" then
      local code = argv[i + 1]
      if not code then
        io.stderr:write("lunio: '-e' needs an argument\n", usage, "\n")
        return 1
      end
      local err
      chunk, err = load(code, "=(command line)")
      if not chunk then
        report(err)
        return 1
      end
      chunkname = "-e"
      script_index = i + 1
      break
    elseif a == "--" then
      i = i + 1
      break
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      io.stderr:write("lunio: unknown option '", a, "'\n", usage, "\n")
      return 1
    else
      break
    end
    i = i + 1
  end
  rawset(_G, "lunio", lunio)
  -- The command owns its process: it may tune the allocator for a busy
  -- loop, which a library loaded into someone else's process never does.
  lunio.tune_allocator()
  if not chunk and argv[i] == nil and isatty(0) then
    rawset(_G, "arg", { [0] = progname or "lunio" })
    local loop = core.default_loop()
    loop:set_signals(false) -- Ctrl-C at the prompt ends the REPL, as in lua5.4
    local ok, err = pcall(lunio.run, main_task, repl)
    loop:set_signals(true)
    if ok then return 0 end
    report(err)
    return 1
  end
  if not chunk then
    local path = argv[i] or "-" -- not a terminal: the script is on stdin
    local err
    chunk, err = loadfile(path ~= "-" and path or nil)
    if not chunk then
      report(err)
      return 1
    end
    chunkname = path
    script_index = i
  end
  -- `arg` as lua sets it: arg[0] is the script, arg[1..] its arguments.
  local script_arg = { [0] = chunkname, [-1] = progname or "lunio" }
  for k = script_index + 1, #argv do script_arg[#script_arg + 1] = argv[k] end
  rawset(_G, "arg", script_arg)
  local ok, err = pcall(lunio.run, main_task, chunk,
    table.unpack(script_arg, 1, #script_arg))
  if ok then return 0 end
  if lunio.is_error(err, "interrupted") then
    io.stderr:write("lunio: interrupted\n")
    return 130
  end
  report(err)
  return 1
end

return cli
