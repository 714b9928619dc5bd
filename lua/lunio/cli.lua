--- lunio.cli: the `lunio` command.
--
--   lunio script.lua [args...]   run a script as the main task
--   lunio -e 'code' [args...]    run a string
--   lunio -v                     print versions
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
The global 'lunio' is set for the script.]=]

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
  if not chunk then
    local path = argv[i]
    if not path then
      io.stderr:write(usage, "\n")
      return 1
    end
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
  rawset(_G, "lunio", lunio)
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
