-- lunio is loaded inside applications that own their process (editors,
-- game engines, servers). It wrote NULL into the main thread's
-- LUA_EXTRASPACE, which the Lua manual reserves for the host, and
-- lunio.run replaced SIGINT's disposition for good (libuv resets it to
-- SIG_DFL when it stops watching). Now lunio never touches the extra space,
-- takes SIGINT only where it has its default action (or is the standalone
-- interpreter's), and puts the previous disposition back.
--
-- The host is spec/support/host.c, compiled here against liblua5.4.
local h = require "helper"

local host -- path of the compiled host, or nil with a reason

local function build_host()
  if host ~= nil then return host end
  -- (not os.tmpname's /tmp/lua_XXXX: a program named lua... is taken for
  -- the standalone interpreter)
  local tmp = os.tmpname()
  os.remove(tmp)
  local exe = tmp:gsub("lua_([^/]*)$", "lunio-host-%1")
  -- Under the sanitizers the ASan build of lunio.core needs the runtime in
  -- the process, so the host is built with it too.
  local build = os.getenv("LUNIO_BUILD_DIR") or "build"
  local san = build:find("asan", 1, true) and "-fsanitize=address,undefined " or ""
  local cmd = ("cc %s-o %s spec/support/host.c $(pkg-config --cflags --libs lua5.4) 2>&1")
    :format(san, exe)
  local p = assert(io.popen(cmd))
  local log = p:read("a")
  assert(p:close(), "cannot build spec/support/host.c:\n" .. log)
  host = exe
  return host
end

local prelude = h.interrupt_prelude

-- Runs `body` in the host with SIGINT set up as `mode`; stdout, stderr, code.
local function run_host(mode, body)
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(prelude, body)
  f:close()
  local out, err = os.tmpname(), os.tmpname()
  local cmd = ("env LUA_PATH=%s LUA_CPATH=%s timeout -s KILL 10 %s %s %s >%s 2>%s")
    :format(h.shell_quote(package.path), h.shell_quote(package.cpath),
      build_host(), mode, script, out, err)
  local ok, how, code = os.execute(cmd)
  local function slurp(path)
    local fh = io.open(path)
    local s = fh and fh:read("a") or ""
    if fh then fh:close() end
    os.remove(path)
    return s
  end
  os.remove(script)
  if not ok and how == "signal" then code = 128 + code end
  return slurp(out), slurp(err), ok and 0 or code
end

describe("regress: the host's process state", function()
  lazy_teardown(function()
    if host then os.remove(host) end
  end)

  it("default SIGINT: run takes it, cancels the main task, gives it back",
    function()
      local out, err, code = run_host("default", [[
        local ok, e = pcall(lunio.run, function()
          interrupt(0.02)
          lunio.sleep(5)
        end)
        print("kind", e.kind)
      ]])
      assert.are.equal(0, code, err)
      assert.matches("kind\tinterrupted", out)
      assert.matches("extraspace ok", out)
      assert.matches("sigint default", out)
    end)

  it("an ignored SIGINT stays ignored, during run and after", function()
    local out, err, code = run_host("ignore", [[
      print("result", lunio.run(function()
        interrupt(0.01)
        lunio.sleep(0.2)
        return "finished"
      end))
    ]])
    assert.are.equal(0, code, err)
    assert.matches("result\tfinished", out)
    assert.matches("sigint ignore", out)
  end)

  it("a host's own SIGINT handler is left alone and keeps receiving it",
    function()
      local out, err, code = run_host("custom", [[
        print("result", lunio.run(function()
          interrupt(0.01)
          lunio.sleep(0.2)
          return "finished"
        end))
      ]])
      assert.are.equal(0, code, err)
      assert.matches("result\tfinished", out)
      assert.matches("handler 1", out)
      assert.matches("sigint custom", out)
    end)

  it("loading and running lunio leaves LUA_EXTRASPACE alone", function()
    local out, err, code = run_host("default", [[
      local co = lunio.coroutine.wrap(function() lunio.sleep(0) return 1 end)
      lunio.run(function() return co() end)
      local loop = lunio.new_loop()
      loop:run(function() lunio.gather(lunio.spawn(lunio.sleep, 0)) end)
      loop:close()
    ]])
    assert.are.equal(0, code, err)
    assert.matches("extraspace ok", out)
  end)

  it("require does not tune the allocator; the lunio command may", function()
    local out, err, code = run_host("default", [[
      local lunio = require "lunio"
      print("tune", type(lunio.tune_allocator))
    ]])
    assert.are.equal(0, code, err)
    assert.matches("tune\tfunction", out)
  end)
end)
