-- The lunio REPL (lua/lunio/cli.lua): `lunio` with no arguments on a
-- terminal. Driven through a pseudo-terminal made by tmux: the spec types
-- lines with send-keys and reads the screen with capture-pane.
local h = require "helper"

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

local have_tmux = sh("command -v tmux >/dev/null")

-- One tmux server of our own (its own socket), so nothing else is touched.
local Term = {}
Term.__index = Term

local function start_term(command)
  local self = setmetatable({
    socket = ("lunio-spec-%d-%d"):format(os.time(), math.random(1e9)),
  }, Term)
  local ok, out = sh(("tmux -L %s new-session -d -s repl -x 160 -y 100 %s"):format(
    self.socket, h.shell_quote(command)))
  assert(ok, "tmux new-session failed: " .. out)
  return self
end

function Term:tmux(args)
  local ok, out = sh(("tmux -L %s %s"):format(self.socket, args))
  assert(ok, "tmux " .. args .. " failed: " .. out)
  return out
end

function Term:screen()
  return self:tmux("capture-pane -p -J -S - -t repl")
end

-- Waits (up to 5 s) until `pred(screen)` is true; returns the screen.
function Term:wait_for(pred, what)
  local deadline = os.time() + 5 * h.time_scale
  local screen
  repeat
    screen = self:screen()
    if pred(screen) then return screen end
    os.execute("sleep 0.05")
  until os.time() > deadline
  error(("timed out waiting for %s; screen:\n%s"):format(what, screen), 2)
end

local function count_prompts(screen)
  local n = 0
  for line in screen:gmatch("[^\n]*") do
    if line:sub(1, 2) == "> " or line == ">" then n = n + 1 end
  end
  return n
end

-- Types `line` and Enter, then waits for the next "> " prompt.
function Term:type(line)
  local before = count_prompts(self:screen())
  self:tmux("send-keys -t repl -l " .. h.shell_quote(line))
  self:tmux("send-keys -t repl Enter")
  return self:wait_for(function(s) return count_prompts(s) > before end,
    "the prompt after " .. line)
end

function Term:kill()
  sh(("tmux -L %s kill-server"):format(self.socket))
end

-- The output lines that follow the prompt line "> `input`".
local function after(screen, input)
  local lines, out, found = {}, {}, nil
  for line in (screen .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  for i = #lines, 1, -1 do
    if lines[i] == "> " .. input then
      found = i
      break
    end
  end
  assert(found, "no prompt line for " .. input .. " in:\n" .. screen)
  for i = found + 1, #lines do
    if lines[i]:sub(1, 1) == ">" then break end
    out[#out + 1] = lines[i]
  end
  return out
end

describe("the lunio REPL", function()
  if not have_tmux then
    pending("needs tmux (apt-get install tmux) to drive a pseudo-terminal")
    return
  end

  local term
  after_each(function()
    if term then term:kill() end
    term = nil
  end)

  local function start()
    term = start_term(("cd %s && env %s lua5.4 bin/lunio; echo \"[exit $?]\"; sleep 30")
      :format(h.shell_quote(os.getenv("PWD") or "."), h.lua_env()))
    local s = term:wait_for(function(s) return count_prompts(s) >= 1 end, "the first prompt")
    assert.matches("^lunio %S+ %(Lua 5%.4", s)
  end

  it("prints values, awaits at top level, survives errors, exits 0 on Ctrl-D", function()
    start()
    assert.same({ "2" }, after(term:type("1 + 1"), "1 + 1"))

    -- a task started at the prompt, awaited by the next statement
    local spawn = 't = lunio.spawn(function() lunio.sleep(0.05) return "task " .. "done" end)'
    assert.same({}, after(term:type(spawn), spawn))
    assert.same({ "task done" }, after(term:type("t:await()"), "t:await()"))

    local s = term:type("lunio.sleep(0.05, 'slept')")
    assert.same({ "slept" }, after(s, "lunio.sleep(0.05, 'slept')"))

    -- an error prints with its traceback; the REPL goes on
    local out = after(term:type('error("boom")'), 'error("boom")')
    assert.equal("stdin:1: boom", out[1])
    assert.equal("stack traceback:", out[2])
    out = after(term:type('error({ kind = "mine", message = "plain" })'),
      'error({ kind = "mine", message = "plain" })')
    assert.equal("mine: plain", out[1])

    -- a cancelled task's error is just an error at the prompt
    term:type("c = lunio.spawn(lunio.sleep, 10)")
    term:type("lunio.sleep(0)")
    term:type("c:cancel('stop')")
    out = after(term:type("c:await()"), "c:await()")
    assert.equal("cancelled: stop", out[1])

    -- multi-line input continues with ">> " while the chunk is incomplete
    term:tmux("send-keys -t repl -l 'for i = 1, 2 do'")
    term:tmux("send-keys -t repl Enter")
    term:wait_for(function(sc) return sc:find("\n>> ", 1, true) end, "the continuation prompt")
    term:tmux("send-keys -t repl -l 'print(\"i=\" .. i)'")
    term:tmux("send-keys -t repl Enter")
    s = term:type("end")
    assert.truthy(s:find("\n>> end\ni=1\ni=2\n> ", 1, true), s)

    -- globals persist between statements
    term:type("x = 40 + 2")
    assert.same({ "42" }, after(term:type("x"), "x"))

    term:tmux("send-keys -t repl C-d")
    s = term:wait_for(function(sc) return sc:find("[exit ", 1, true) end, "the exit")
    assert.truthy(s:find("\n%[exit 0%]"), s)
  end)

  it("reports a syntax error and goes on", function()
    start()
    term:type("error('first')") -- a traceback the syntax error must not reuse
    local out = after(term:type("x = = 1"), "x = = 1")
    assert.matches("^stdin:1: unexpected symbol near '='", out[1])
    assert.is_nil(out[2])
    assert.same({ "3" }, after(term:type("1 + 2"), "1 + 2"))
  end)

  it("drops a cancellation of its own task left pending by a statement", function()
    start()
    assert.same({ "true" }, after(term:type("lunio.current_task():cancel()"),
      "lunio.current_task():cancel()"))
    assert.same({ "fine" }, after(term:type("lunio.sleep(0, 'fine')"),
      "lunio.sleep(0, 'fine')"))
  end)
end)
