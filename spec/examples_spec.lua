-- Every script in examples/ and the README's main example run unchanged in
-- both ways a user may start them: `lua5.4 file` (the script calls
-- lunio.run) and the `lunio` command (where lunio.run runs its function in
-- place, inside the command's main task). Both must print the same and
-- exit with the same status. A new example without a case here fails.
local h = require "helper"
local nginx = require "support.nginx"

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- A temporary directory with two small files (parallel_hash's input).
local hash_dir
local function make_hash_dir()
  if hash_dir then return hash_dir end
  hash_dir = os.tmpname()
  os.remove(hash_dir)
  assert(os.execute(("mkdir -p %s/sub && printf hello >%s/a.txt && printf 'x\\0y' >%s/sub/b")
    :format(hash_dir, hash_dir, hash_dir)))
  return hash_dir
end

-- Runs `script args...` both ways; returns {out=, err=, code=} for each.
local function both(script, args, opts)
  local a, b = {}, {}
  a.out, a.err, a.code = h.lua(script, args, opts)
  local argv = { script }
  for _, v in ipairs(args or {}) do argv[#argv + 1] = v end
  b.out, b.err, b.code = h.lunio(argv, opts)
  return a, b
end

-- The cases: script -> function(srv) returning a list of runs, each
-- {args, check(out, err, code)}; `check` sees the lua5.4 run, and the
-- lunio run must print the same (unless `same = false`, for output with
-- timings, where `check` sees both).
local cases = {}

cases["examples/parallel_hash.lua"] = function()
  local dir = make_hash_dir()
  return { { { dir, "-j", "2" }, function(out, err, code)
    assert.equal(0, code, err)
    local l = lines(out)
    assert.equal(3, #l, out)
    assert.matches("^%x+%s+5%s+" .. dir:gsub("%p", "%%%0") .. "/a%.txt$", l[1])
    assert.matches("^2 files, 8 bytes hashed in [%d.]+ s, 0 errors$", l[3])
  end, same = false } }
end

cases["examples/port_check.lua"] = function()
  return { { { "-t", "0.2", "127.0.0.1:1-3" }, function(out, err, code)
    assert.equal(0, code, err)
    assert.equal("checked 3: 0 open, 3 closed, 0 timed out, 0 errors\n", out)
  end } }
end

cases["examples/echo_client.lua"] = function()
  return { { { "1", "hi" }, function(out, err, code)
    assert.equal(1, code, out)
    assert.matches("econnrefused: cannot connect to 127.0.0.1 port 1", err)
  end } }
end

-- Servers run until SIGINT: each gets one 0.5 s in.
cases["examples/echo_server.lua"] = function()
  return { { { "0" }, function(out, err, code)
    assert.equal(0, code, err)
    assert.matches("^echo server on 127%.0%.0%.1 port %d+\nstopped\n$", out)
  end, same = false, signal = { "INT", 0.5 } } }
end

cases["examples/chat_server.lua"] = function()
  return { { { "0" }, function(out, err, code)
    assert.equal(0, code, err)
    assert.matches("^chat server on port %d+\nstopped\n$", out)
  end, same = false, signal = { "INT", 0.5 } } }
end

-- A server with two clients of its own; SIGTERM 0.5 s in, while the
-- clients' requests (0.2 s each) are in flight.
cases["examples/graceful_shutdown.lua"] = function()
  return { { { "--port", "0", "--work", "0.2", "--clients", "2", "--interval", "0.05" },
    function(out, err, code)
      assert.equal(0, code, err)
      local accepted = assert(out:match("shut down cleanly: (%d+) accepted, %1 done"), out)
      assert.is_true(tonumber(accepted) >= 2, out)
    end, same = false, signal = { "TERM", 0.5 } } }
end

-- Output as it comes, tagged: [2]'s line lands between [1]'s two; the
-- timeout stops [4]; the summary comes in command order.
cases["examples/run_many.lua"] = function()
  return {
    { { "-j", "3", "-t", "0.5", "echo a; sleep 0.3; echo b", "sleep 0.1; echo c",
      "echo err >&2; exit 3", "sleep 5" }, function(out, err, code)
      assert.equal(1, code, err)
      local l = lines(out)
      assert.equal(7, #l, out)
      assert.same({ "[1] a", "[2] c", "[1] b" }, { l[1], l[2], l[3] })
      assert.matches("^%[1%] exit 0 after 0%.%d%d s: echo a; sleep 0%.3; echo b$", l[4])
      assert.matches("^%[2%] exit 0 after 0%.%d%d s: sleep 0%.1; echo c$", l[5])
      assert.matches("^%[3%] exit 3 after %d%.%d%d s: echo err >&2; exit 3$", l[6])
      assert.matches("^%[4%] timed out after 0%.5%d s: sleep 5$", l[7])
      assert.equal("[3] err\n", err)
    end, same = false },
    { { "--", "echo x", "printf 'no newline'" }, function(out, err, code)
      assert.equal(0, code, err)
      local l = lines(out)
      assert.equal(4, #l, out)
      if l[1] ~= "[1] x" then l[1], l[2] = l[2], l[1] end -- either may come first
      assert.same({ "[1] x", "[2] no newline" }, { l[1], l[2] })
      assert.matches("^%[1%] exit 0 after %d%.%d%d s: echo x$", l[3])
      assert.matches("^%[2%] exit 0 after %d%.%d%d s: printf 'no newline'$", l[4])
    end, same = false },
  }
end

cases["examples/hello.lua"] = function()
  return { { {}, function(out, err, code)
    assert.equal(0, code, err)
    assert.equal("Hello, world!\n", out)
  end } }
end

cases["examples/three_ways.lua"] = function()
  return { { {}, function(out, err, code)
    assert.equal(0, code, err)
    local l = lines(out)
    assert.equal(4, #l, out)
    assert.equal("done: greet, anonymous, greeter", l[4])
  end } }
end

cases["examples/pipeline.lua"] = function()
  return {
    { {}, function(out, err, code)
      assert.equal(0, code, err)
      assert.equal("collected 20 squares, sum 2870", lines(out)[2])
    end },
    -- which worker gets item 7 depends on timing: compare the shape
    { { "--fail-at", "7" }, function(out, _, code)
      assert.equal(1, code)
      local l = lines(out)
      assert.equal("pipeline failed: 1 error(s)", l[1])
      assert.matches("^  bad_item: worker %d+ cannot square 7$", l[2])
    end, same = false },
  }
end

cases["examples/rate_limited.lua"] = function()
  return { { {}, function(out, err, code)
    assert.equal(0, code, err)
    assert.equal("9 ok, 3 timed out, 0 cancelled; at most 3 at a time (limit 3)",
      lines(out)[13])
  end } }
end

cases["examples/fetch_url.lua"] = function(srv)
  return {
    { { srv:url("/small.txt") }, function(out, err, code)
      assert.equal(0, code, err)
      assert.equal(read(srv.www .. "/small.txt"), out)
    end },
    { { "http://127.0.0.1:1/" }, function(out, err, code)
      assert.equal(1, code)
      assert.equal("", out)
      assert.matches("^fetch_url: connect: ", err)
    end },
  }
end

cases["examples/fetch_many.lua"] = function(srv)
  return { { { "--quiet", "-c", "4", "--base", srv:url(""), "--path", "/small.txt:10",
    "--path", "/status/404:2" }, function(out, err, code)
    assert.equal(0, code, err) -- a 404 is a response, not a failure
    local l = lines(out)
    assert.equal("requests: 12 (0 failed)", l[1])
    assert.equal("statuses: 200: 10, 404: 2", l[2])
    assert.equal("bytes:    10262 (10.0 KiB)", l[3]) -- 10 x 1024 + 2 x "status 404\n"
  end, same = false } }
end

describe("every example runs under lua5.4 and under the lunio command", function()
  local srv

  setup(function()
    srv = nginx.start()
  end)

  teardown(function()
    if srv then srv:stop() end
    if hash_dir then os.execute("rm -rf " .. hash_dir) end
  end)

  it("has a case for each script in examples/", function()
    local p = assert(io.popen("ls examples/*.lua"))
    local missing = {}
    for path in p:lines() do
      if not cases[path] then missing[#missing + 1] = path end
    end
    p:close()
    assert.same({}, missing)
  end)

  local names = {}
  for name in pairs(cases) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    it(name, function()
      for _, run in ipairs(cases[name](srv)) do
        local plain, cmd = both(name, run[1], { signal = run.signal })
        run[2](plain.out, plain.err, plain.code)
        if run.same == false then
          run[2](cmd.out, cmd.err, cmd.code)
        else
          assert.equal(plain.out, cmd.out)
          assert.equal(plain.err, cmd.err)
          assert.equal(plain.code, cmd.code)
        end
      end
    end)
  end

  it("README.md's main example", function()
    local readme = read("README.md")
    local code = readme:match("```lua\n(.-)```")
    assert.is_truthy(code, "no ```lua block in README.md")
    -- the example fetches from a local server on 8080: use the fixture's
    local base = "http://127.0.0.1:8080/"
    assert.is_truthy(code:find(base, 1, true))
    code = code:gsub(base:gsub("%p", "%%%0"), srv:url("/"))
    local script = os.tmpname() .. ".lua"
    local f = assert(io.open(script, "w"))
    f:write(code)
    f:close()
    local plain, cmd = both(script)
    os.remove(script)
    assert.equal(0, plain.code, plain.err)
    assert.equal("", plain.err)
    assert.equal("404\tslept\n", plain.out) -- /a does not exist on the fixture
    assert.equal(plain.out, cmd.out)
    assert.equal(plain.err, cmd.err)
    assert.equal(0, cmd.code)
  end)
end)
