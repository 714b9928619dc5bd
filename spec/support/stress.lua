--- Shared by the reliability gates (issue 14): the specs tagged #stress
--- (spec/stress_*_spec.lua, spec/fuzz_spec.lua, spec/faults_spec.lua) and
--- the child scripts they start (spec/support/stress/*.lua).
---
---   local S = require "support.stress"
---   S.full                       STRESS_FULL=1: full sizes instead of CI's
---   S.size("STORM_TASKS", ci, full)   a size, overridable from the environment
---   S.seed("STORM_SEED")         a fixed seed unless the variable is set
---   S.sample(loop)               {rss=, heap=, fds=, handles=, resources=, ...}
---   S.settle()                   two full collections
---   S.line("label", {k = v})     prints "label k=v ..." (and flushes)
---   S.pick(list, only, base)     the named cases to run (see below)
---   S.crunch(n)                  CPU work for to_thread
---   S.child(script, args, opts)  (specs) runs a child lua5.4, echoing its lines
---
--- Every component is a list of named cases, so a new module plugs in by
--- adding entries.
local M = {}

M.full = (os.getenv("STRESS_FULL") or "0") ~= "0"

---The error kinds the docs name (docs/reference.md, docs/http.md;
---spec/faults_spec.lua checks that they do). libuv error names ("enoent",
---"emfile" ...) are documented as a family.
M.DOC_KINDS = {
  "cancelled", "timeout", "invalid_state", "queue_empty", "queue_full",
  "closed", "task_group", "interrupted", "deadlock", "connect", "resolve",
  "tls", "too_many_redirects", "body_too_large", "protocol", "aborted",
  "http_status",
}

---A size: the environment variable `name` if set, else `full` under
---STRESS_FULL=1, else `ci`.
function M.size(name, ci, full)
  local v = tonumber(os.getenv(name) or "")
  if v then return v end
  if M.full then return full or ci end
  return ci
end

---The seed to use: the environment variable `name` if set, else a fixed one
---(so a run repeats). Seeds Lua's generator too.
function M.seed(name, default)
  local seed = math.tointeger(tonumber(os.getenv(name) or "")) or default or 14014
  math.randomseed(seed)
  return seed
end

local function status_kb(field)
  local f = io.open("/proc/self/status")
  if not f then return nil end
  for line in f:lines() do
    local kb = line:match("^" .. field .. ":%s+(%d+) kB")
    if kb then
      f:close()
      return tonumber(kb)
    end
  end
  f:close()
end

function M.rss_kb() return status_kb("VmRSS") end
function M.vmsize_kb() return status_kb("VmSize") end
function M.vmhwm_kb() return status_kb("VmHWM") end

---Opens /dev/null until the descriptors run out (EMFILE) and returns a
---function that closes them all again.
function M.hold_all_fds()
  local held = {}
  while true do
    local f = io.open("/dev/null")
    if not f then break end
    held[#held + 1] = f
  end
  return function()
    for _, f in ipairs(held) do f:close() end
  end
end

function M.settle()
  collectgarbage()
  collectgarbage()
end

---The process's figures now; with `loop`, that loop's too. `heap` is the
---memory malloc counts in use (KiB), `rss` the resident set (KiB), and
---`rss_trim` the resident set after malloc_trim(0) when `trim` is true
---(glibc keeps freed pages: RSS alone stays near a burst's peak).
function M.sample(loop, trim)
  local core = require "lunio.core"
  local h = core.heap_info and core.heap_info()
  local s = {
    rss = M.rss_kb(),
    heap = h and h.in_use // 1024,
    fds = core.open_fds(),
    lua = math.floor(collectgarbage("count")),
  }
  if loop then
    s.handles = loop:active_handles()
    s.resources = loop:open_resources()
    s.tasks = #loop:all_tasks()
    -- the streams branch counts its streams, servers and UDP sockets
    if core.stream and core.stream.open_count then
      s.streams = core.stream.open_count(loop)
    end
  end
  if trim and core.heap_trim then
    core.heap_trim()
    s.rss_trim = M.rss_kb()
  end
  return s
end

---M.sample(loop, true) after a full collection, with the fields of
---`extra` added (the figures the gates compare).
function M.settled_sample(loop, extra)
  M.settle()
  local s = M.sample(loop, true)
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end

local ORDER = { "tasks", "handles", "resources", "streams", "fds", "heap",
  "rss", "rss_trim", "lua" }

---Formats `t` as "k=v k=v", the keys of ORDER first, then the rest sorted.
function M.format(t)
  local out, seen = {}, {}
  local function add(k)
    local v = t[k]
    if v == nil or seen[k] then return end
    seen[k] = true
    if math.type(v) == "float" then v = ("%.3f"):format(v) end
    out[#out + 1] = k .. "=" .. tostring(v)
  end
  for _, k in ipairs(ORDER) do add(k) end
  local rest = {}
  for k in pairs(t) do
    if not seen[k] then rest[#rest + 1] = k end
  end
  table.sort(rest)
  for _, k in ipairs(rest) do add(k) end
  return table.concat(out, " ")
end

---CPU work for to_thread (a function with no upvalues, as to_thread needs):
---a checksum of 1..n that the caller can compare with its own.
function M.crunch(n)
  local s = 0
  for i = 1, n do s = s + i % 7 end
  return s
end

---The cases of `list` to run: those named in `only` (a comma-separated
---list of names, from an environment variable; nil: all), without the
---"http" case when there is no HTTP `base` URL (said in a line).
function M.pick(list, only, base)
  local picked = {}
  for _, case in ipairs(list) do
    local asked = not only or ("," .. only .. ","):find("," .. case.name .. ",", 1, true)
    if asked and case.name == "http" and not base then
      M.line("http: skipped (no HTTP_BASE argument)")
    elseif asked then
      picked[#picked + 1] = case
    end
  end
  return picked
end

---Prints one figures line: `label k=v ...`.
function M.line(label, t)
  io.stdout:write(label, t and (" " .. M.format(t)) or "", "\n")
  io.stdout:flush()
end

-- ---------------------------------------------------------------------------
-- For specs (the busted process): children and their figure lines.

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.shell_quote = shell_quote

---The number after `name=` in a figures line, or nil.
function M.field(line, name)
  return tonumber(line:match("%f[%w_]" .. name .. "=(%-?[%d.]+)"))
end

---The first line starting with `prefix` (a plain string), or nil.
function M.find(lines, prefix)
  for _, l in ipairs(lines) do
    if l:sub(1, #prefix) == prefix then return l end
  end
end

---Runs `lua5.4 script args...` (a child with this process's package paths,
---the environment `opts.env`, `ulimit -n opts.nofile` when given, killed
---after `opts.timeout` seconds, default 600) and echoes each line of its
---output (stdout and stderr) as it comes, unless `opts.quiet`. `script` is
---a path, or Lua source (with a newline) written to a temporary file;
---`opts.cwd` is the child's working directory (then `script` must be an
---absolute path). Returns the lines and the exit
---code (128 + n when signal n ended it; 137 after the time limit).
function M.child(script, args, opts)
  opts = opts or {}
  local h = require "helper"
  local tmp
  if script:find("\n") then
    tmp = os.tmpname()
    local f = assert(io.open(tmp, "w"))
    f:write(script)
    f:close()
    script = tmp
  end
  local argv = {}
  for i, a in ipairs(args or {}) do argv[i] = shell_quote(a) end
  local env = { h.lua_env() }
  for k, v in pairs(opts.env or {}) do env[#env + 1] = k .. "=" .. shell_quote(v) end
  local cmd = ("exec env %s timeout -s KILL %d lua5.4 %s %s"):format(
    table.concat(env, " "), opts.timeout or 600, shell_quote(script),
    table.concat(argv, " "))
  if opts.nofile then cmd = ("ulimit -n %d && %s"):format(opts.nofile, cmd) end
  if opts.cwd then cmd = ("cd %s && %s"):format(shell_quote(opts.cwd), cmd) end
  local p = assert(io.popen("sh -c " .. shell_quote(cmd) .. " 2>&1 </dev/null"))
  local lines = {}
  for line in p:lines() do
    lines[#lines + 1] = line
    if not opts.quiet then
      io.stdout:write("\n    ", line)
      io.stdout:flush()
    end
  end
  local _, how, code = p:close()
  if not opts.quiet then io.stdout:write("\n") end
  if tmp then os.remove(tmp) end
  if how == "signal" then code = 128 + code end
  return lines, code, table.concat(lines, "\n")
end

return M
