-- lunio.fs (API.md "Processes, files, names, signals, threads" and the
-- fs.stat row of "Precise semantics"): every function on real files in a
-- temporary directory, every error kind, cancellation at each suspending
-- call (request still queued in libuv's pool, running in it, or finished
-- but not yet resumed), and no descriptor left open (lunio.testing.async
-- compares /proc/self/fd before and after each test).
local lunio = require "lunio"
local fs = require "lunio.fs"
local testing = require "lunio.testing"
local h = require "helper"

local function async(fn, opts) return h.async(fn, opts) end
local scale = h.time_scale
local q = h.shell_quote

local function sh(cmd)
  local ok, how, code = os.execute(cmd)
  assert(ok, ("command failed (%s %s): %s"):format(how, code, cmd))
end

-- A fresh directory, removed (with everything in it) when `<close>`d.
local function scratch()
  local dir = h.mktemp("lunio-fs-spec", "-d")
  return dir, setmetatable({}, {
    __close = function() os.execute("rm -rf " .. q(dir)) end,
  })
end

local kind_of = h.kind_and_error

local eventually = h.eventually

-- Occupies every thread of libuv's pool with an open of a FIFO that no
-- one writes, so the next request waits in the queue (where uv_cancel
-- takes it back). Returns a function that releases the threads.
local POOL = tonumber(os.getenv("UV_THREADPOOL_SIZE")) or 4
local function block_pool(dir)
  local opens, fifos = {}, {}
  for i = 1, POOL do
    fifos[i] = dir .. "/block" .. i
    sh("mkfifo " .. q(fifos[i]))
    opens[i] = lunio.create_task(fs.open, fifos[i], "r")
  end
  lunio.sleep(0.05 * scale) -- the pool's threads pick the opens up
  return function()
    for i = 1, POOL do
      -- a writer's open meets the blocked reader; then EOF
      sh("timeout 5 sh -c ': >" .. fifos[i] .. "'")
      opens[i]:await():close()
    end
  end
end

-- Spins until `task` was woken (its request done), then cancels it before
-- it resumes: the "cancelled after the wake-up" path.
local function cancel_when_woken(task)
  if task:state() == "pending" then lunio.sleep(0) end -- let it start
  assert.are.equal("waiting", task:state())
  while task:state() == "waiting" do lunio.sleep(0) end
  assert.are.equal("pending", task:state())
  task:cancel()
end

describe("lunio.fs", function()
  describe("whole files", function()
    it("write_file, read_file and append_file round-trip binary data", async(function()
      local dir, _ <close> = scratch()
      local path = dir .. "/data.bin"
      local data = "a\0b\255\n" .. ("x"):rep(100000)
      assert.is_nil(fs.write_file(path, data))
      assert.are.equal(data, fs.read_file(path))
      fs.append_file(path, "tail\0")
      assert.are.equal(data .. "tail\0", fs.read_file(path))
      fs.write_file(path, "short") -- truncates
      assert.are.equal("short", fs.read_file(path))
      fs.append_file(dir .. "/new.txt", "made") -- creates
      assert.are.equal("made", fs.read_file(dir .. "/new.txt"))
      fs.write_file(dir .. "/empty", "")
      assert.are.equal("", fs.read_file(dir .. "/empty"))
    end))

    it("read_file reads files that report no size (/proc) and FIFOs", async(function()
      local dir, _ <close> = scratch()
      local status = fs.read_file("/proc/self/status")
      assert.matches("^Name:", status)
      assert.matches("\nPid:%s+%d+\n", status)
      local fifo = dir .. "/fifo"
      sh("mkfifo " .. q(fifo))
      local reader = lunio.create_task(fs.read_file, fifo)
      lunio.sleep(0.02 * scale)
      sh("printf 'through a pipe' >" .. q(fifo))
      assert.are.equal("through a pipe", reader:await())
    end))

    it("read_file reads a file bigger than its buffer chunk exactly", async(function()
      local dir, _ <close> = scratch()
      local path = dir .. "/big"
      local chunk = ("0123456789abcdef"):rep(65536) -- 1 MiB
      local f = assert(io.open(path, "wb"))
      for _ = 1, 9 do f:write(chunk) end -- 9 MiB: two full chunks and a bit
      f:write("end")
      f:close()
      local s = fs.read_file(path)
      assert.are.equal(9 * #chunk + 3, #s)
      assert.are.equal("end", s:sub(-3))
      assert.are.equal(chunk, s:sub(8 * #chunk + 1, 9 * #chunk))
    end))

    it("other tasks keep running while read_file reads a big file", async(function()
      local dir, _ <close> = scratch()
      local path = dir .. "/sparse"
      sh("truncate -s 64M " .. q(path)) -- sparse: zeros, no disk I/O
      local ticks, stop = 0, false
      local ticker = lunio.create_task(function()
        while not stop do
          ticks = ticks + 1
          lunio.sleep(0)
        end
      end)
      local s = fs.read_file(path)
      stop = true
      ticker:await()
      assert.are.equal(64 * 1024 * 1024, #s)
      -- one resume per 4 MiB chunk at least; the ticker runs in between
      assert.is_true(ticks >= 16, "ticks: " .. ticks)
    end, { timeout = 5 }))

    it("read_file of 1 GiB does not hold the loop #slow", async(function()
      local dir, _ <close> = scratch()
      local path = dir .. "/sparse"
      sh("truncate -s 1G " .. q(path))
      local gaps, last, stop = {}, lunio.now(), false
      local ticker = lunio.create_task(function()
        while not stop do
          lunio.sleep(0.001)
          local now = lunio.now()
          gaps[#gaps + 1] = now - last
          last = now
        end
      end)
      local t0 = lunio.now()
      local s = fs.read_file(path)
      local took = lunio.now() - t0
      stop = true
      ticker:await()
      assert.are.equal(1 << 30, #s)
      assert.are.equal(0, s:byte(1))
      assert.are.equal(0, s:byte(-1))
      s = nil -- luacheck: ignore
      collectgarbage()
      table.sort(gaps)
      -- the ticker ran all along; its longest wait is the final copy of
      -- the buffer into a Lua string, a fraction of the whole read
      assert.is_true(#gaps >= 20, "ticks: " .. #gaps)
      assert.is_true(gaps[#gaps] < took * 0.75,
        ("longest gap %.3f s of %.3f s"):format(gaps[#gaps], took))
    end, { timeout = 60 }))
  end)

  describe("stat, lstat, exists", function()
    it("return every field, times in seconds", async(function()
      local dir, _ <close> = scratch()
      local path = dir .. "/f"
      fs.write_file(path, "12345")
      sh("chmod 640 " .. q(path) .. " && touch -m -d @1700000000.25 " .. q(path))
      local st = fs.stat(path)
      assert.are.equal("file", st.type)
      assert.are.equal(5, st.size)
      assert.are.equal(tonumber("640", 8), st.mode)
      for _, k in ipairs { "uid", "gid", "ino", "dev", "nlink", "size", "mode" } do
        assert.are.equal("integer", math.type(st[k]), k)
      end
      assert.are.equal(1, st.nlink)
      assert.are.equal(1700000000.25, st.mtime)
      assert.is_true(math.abs(st.ctime - os.time()) < 60)
      assert.is_number(st.atime)
      local n = 0
      for _ in pairs(st) do n = n + 1 end
      assert.are.equal(11, n)
    end))

    it("name every type; lstat sees links, stat follows them", async(function()
      local dir, _ <close> = scratch()
      fs.write_file(dir .. "/file", "")
      sh("ln -s file " .. q(dir .. "/link") .. " && mkfifo " .. q(dir .. "/fifo"))
      sh("python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "
        .. q(dir .. "/sock"))
      assert.are.equal("file", fs.stat(dir .. "/file").type)
      assert.are.equal("directory", fs.stat(dir).type)
      assert.are.equal("link", fs.lstat(dir .. "/link").type)
      assert.are.equal("file", fs.stat(dir .. "/link").type)
      assert.are.equal("fifo", fs.stat(dir .. "/fifo").type)
      assert.are.equal("socket", fs.stat(dir .. "/sock").type)
      assert.are.equal("char", fs.stat("/dev/null").type)
      local types = {}
      for name, type in fs.scandir(dir) do types[name] = type end
      assert.are.same({ file = "file", link = "link", fifo = "fifo", sock = "socket" }, types)
      for name, type in fs.scandir("/dev") do
        if type == "block" then
          assert.are.equal("block", fs.stat("/dev/" .. name).type)
          break
        end
      end
    end))

    it("exists: true, false for enoent and enotdir and dangling links", async(function()
      local dir, _ <close> = scratch()
      fs.write_file(dir .. "/f", "")
      sh("ln -s nowhere " .. q(dir .. "/dangling"))
      assert.is_true(fs.exists(dir))
      assert.is_true(fs.exists(dir .. "/f"))
      assert.is_false(fs.exists(dir .. "/missing"))
      assert.is_false(fs.exists(dir .. "/f/below")) -- enotdir
      assert.is_false(fs.exists(dir .. "/dangling"))
      sh("ln -s loop " .. q(dir .. "/loop"))
      assert.are.equal("eloop", kind_of(fs.exists, dir .. "/loop")) -- other errors raise
    end))
  end)

  describe("directories", function()
    it("mkdir, rmdir, remove, rename, copyfile", async(function()
      local dir, _ <close> = scratch()
      fs.mkdir(dir .. "/sub")
      assert.are.equal("directory", fs.stat(dir .. "/sub").type)
      assert.are.equal("eexist", kind_of(fs.mkdir, dir .. "/sub"))
      fs.mkdir(dir .. "/private", { mode = tonumber("700", 8) })
      assert.are.equal(tonumber("700", 8), fs.stat(dir .. "/private").mode)
      fs.write_file(dir .. "/sub/a", "A")
      assert.are.equal("enotempty", kind_of(fs.rmdir, dir .. "/sub"))
      fs.rename(dir .. "/sub/a", dir .. "/b")
      assert.is_false(fs.exists(dir .. "/sub/a"))
      assert.are.equal("A", fs.read_file(dir .. "/b"))
      fs.copyfile(dir .. "/b", dir .. "/c")
      assert.are.equal("A", fs.read_file(dir .. "/c"))
      fs.write_file(dir .. "/c", "C")
      fs.copyfile(dir .. "/b", dir .. "/c") -- replaces
      assert.are.equal("A", fs.read_file(dir .. "/c"))
      local kind, err = kind_of(fs.copyfile, dir .. "/b", dir .. "/c", { exclusive = true })
      assert.are.equal("eexist", kind)
      assert.are.equal(dir .. "/b", err.path)
      assert.are.equal(dir .. "/c", err.dest)
      fs.remove(dir .. "/c")
      assert.is_false(fs.exists(dir .. "/c"))
      fs.rmdir(dir .. "/sub")
      assert.is_false(fs.exists(dir .. "/sub"))
      assert.are.equal("eisdir", kind_of(fs.remove, dir .. "/private"))
    end))

    it("mkdir with parents makes the missing ones and accepts an existing one", async(function()
      local dir, _ <close> = scratch()
      fs.mkdir(dir .. "/a/b//c/", { parents = true })
      assert.are.equal("directory", fs.stat(dir .. "/a/b/c").type)
      fs.mkdir(dir .. "/a/b/c", { parents = true })
      fs.write_file(dir .. "/a/file", "")
      assert.are.equal("eexist", kind_of(fs.mkdir, dir .. "/a/file", { parents = true }))
      assert.are.equal("enotdir", kind_of(fs.mkdir, dir .. "/a/file/x", { parents = true }))
      -- many tasks racing to make the same tree all succeed
      local list = {}
      for i = 1, 8 do
        list[i] = lunio.create_task(fs.mkdir, dir .. "/r/s/t/u", { parents = true })
      end
      for i = 1, 8 do list[i]:await() end
      assert.is_true(fs.exists(dir .. "/r/s/t/u"))
    end))

    it("scandir lists names and types sorted, without . and ..", async(function()
      local dir, _ <close> = scratch()
      for _, n in ipairs { "b", "a", "c" } do fs.write_file(dir .. "/" .. n, n) end
      fs.mkdir(dir .. "/d")
      local names, types = {}, {}
      for name, type in fs.scandir(dir) do
        names[#names + 1] = name
        types[#types + 1] = type
      end
      assert.are.same({ "a", "b", "c", "d" }, names)
      assert.are.same({ "file", "file", "file", "directory" }, types)
      local n = 0
      for _ in fs.scandir(dir .. "/d") do n = n + 1 end
      assert.are.equal(0, n)
      local iter = fs.scandir(dir)
      for _ = 1, 4 do iter() end
      assert.is_nil(iter())
      assert.is_nil(iter()) -- stays done
      assert.are.equal("enotdir", kind_of(fs.scandir, dir .. "/a"))
    end))

    it("realpath resolves links and dots; mkdtemp appends six characters", async(function()
      local dir, _ <close> = scratch()
      fs.mkdir(dir .. "/x")
      sh("ln -s x " .. q(dir .. "/y"))
      local real = fs.realpath(dir)
      assert.are.equal(real .. "/x", fs.realpath(dir .. "/y/../y/./"))
      local a = fs.mkdtemp(dir .. "/job-")
      local b = fs.mkdtemp(dir .. "/job-")
      assert.matches("/job%-[%w]+$", a)
      assert.are.equal(#(dir .. "/job-") + 6, #a)
      assert.are_not.equal(a, b)
      local st = fs.stat(a)
      assert.are.equal("directory", st.type)
      assert.are.equal(tonumber("700", 8), st.mode)
      assert.are.equal("enoent", kind_of(fs.mkdtemp, dir .. "/missing/job-"))
    end))
  end)

  describe("errors", function()
    it("raise the libuv error name as kind, with .path and a message", async(function()
      local dir, _ <close> = scratch()
      local missing = dir .. "/missing"
      fs.write_file(dir .. "/file", "x")
      local cases = {
        { "enoent", fs.read_file, missing },
        { "enoent", fs.open, missing },
        { "enoent", fs.stat, missing },
        { "enoent", fs.lstat, missing },
        { "enoent", fs.rmdir, missing },
        { "enoent", fs.remove, missing },
        { "enoent", fs.rename, missing, dir .. "/to" },
        { "enoent", fs.copyfile, missing, dir .. "/to" },
        { "enoent", fs.realpath, missing },
        { "enoent", fs.scandir, missing },
        { "enoent", fs.write_file, missing .. "/below", "x" },
        { "enoent", fs.append_file, missing .. "/below", "x" },
        { "enoent", fs.mkdir, missing .. "/below" },
        { "enotdir", fs.stat, dir .. "/file/below" },
        { "enotdir", fs.rmdir, dir .. "/file" },
        { "eisdir", fs.read_file, dir },
        { "eisdir", fs.open, dir, "w" },
        { "eisdir", fs.write_file, dir, "x" },
        { "einval", fs.rename, dir, dir .. "/inside" },
        { "enametoolong", fs.stat, dir .. "/" .. ("n"):rep(300) },
      }
      for _, c in ipairs(cases) do
        local kind, err = kind_of(table.unpack(c, 2))
        assert.are.equal(c[1], kind, tostring(err))
        assert.are.equal(c[3], err.path)
        assert.is_number(err.code)
        assert.matches(c[3]:gsub("%p", "%%%0"), err.message)
        assert.matches("^" .. c[1] .. ": ", tostring(err))
      end
    end))

    it("a File reports ebadf for the wrong direction", async(function()
      local dir, _ <close> = scratch()
      local path = dir .. "/f"
      fs.write_file(path, "data")
      local r <close> = fs.open(path, "r")
      local w <close> = fs.open(dir .. "/g", "w")
      local kind, err = kind_of(r.write, r, "x")
      assert.are.equal("ebadf", kind)
      assert.are.equal(path, err.path)
      assert.are.equal("ebadf", (kind_of(w.read, w, 1)))
      assert.are.equal("data", r:read()) -- the File still works
    end))

    it("eacces for an unprivileged user (a child under setpriv)", function()
      local p = io.popen("id -u; command -v setpriv")
      local uid, setpriv = p:read("l"), p:read("l")
      p:close()
      if uid ~= "0" or not setpriv then
        pending("needs root and setpriv")
        return
      end
      local dir, _ <close> = scratch()
      sh("chmod 755 " .. q(dir) .. " && mkdir -m 700 " .. q(dir .. "/locked")
        .. " && echo x >" .. q(dir .. "/locked/f"))
      local script = dir .. "/child.lua"
      local f = assert(io.open(script, "w"))
      f:write(([[
        local lunio = require "lunio"
        lunio.run(function()
          for _, fn in ipairs { "read_file", "stat", "scandir", "open" } do
            local ok, e = pcall(lunio.fs[fn], %q)
            print(fn, ok, e.kind, e.path)
          end
        end)
      ]]):format(dir .. "/locked/f"))
      f:close()
      sh("chmod 644 " .. q(script))
      local function absolute(path)
        return (path:gsub("[^;]+", function(e)
          return e:sub(1, 1) == "/" and e or (os.getenv("PWD") .. "/" .. e:gsub("^%./", ""))
        end))
      end
      local cmd = ("setpriv --reuid=65534 --regid=65534 --clear-groups "
        .. "env LUA_PATH=%s LUA_CPATH=%s lua5.4 %s 2>&1"):format(
        q(absolute(package.path)), q(absolute(package.cpath)), q(script))
      local pipe = assert(io.popen(cmd))
      local out = pipe:read("a")
      pipe:close()
      for _, fn in ipairs { "read_file", "stat", "scandir", "open" } do
        assert.matches(fn .. "\tfalse\teacces\t" .. (dir .. "/locked/f"):gsub("%p", "%%%0"), out)
      end
    end)
  end)

  describe("bad arguments", function()
    it("raise 'bad argument' errors naming the function", async(function()
      local dir, _ <close> = scratch()
      fs.write_file(dir .. "/f", "x")
      local f <close> = fs.open(dir .. "/f", "r+")
      local cases = {
        { "#1 to 'read_file' %(string expected, got no value%)",
          function() fs.read_file() end },
        { "#1 to 'read_file' %(path contains a NUL byte%)", function() fs.read_file("a\0b") end },
        { "#1 to 'stat' %(string expected, got table%)", function() fs.stat({}) end },
        { "#2 to 'write_file' %(string expected, got no value%)",
          function() fs.write_file("x") end },
        { "#2 to 'rename' %(string expected, got no value%)", function() fs.rename("x") end },
        { "#2 to 'open' %(invalid mode 'rw'%)", function() fs.open("x", "rw") end },
        { "#2 to 'open' %(invalid mode ''%)", function() fs.open("x", "") end },
        { "#2 to 'open' %(invalid mode 'rb%+'%)", function() fs.open("x", "rb+") end },
        { "#2 to 'open' %(invalid mode 'r%+%+'%)", function() fs.open("x", "r++") end },
        { "#2 to 'mkdir' %(table expected, got number%)", function() fs.mkdir("x", 7) end },
        { "#2 to 'mkdir' %(mode must be", function() fs.mkdir("x", { mode = 1.5 }) end },
        { "#1 to 'mkdir' %(string expected, got nil%)", function() fs.mkdir() end },
        { "#3 to 'copyfile' %(table expected", function() fs.copyfile("a", "b", true) end },
        { "#2 to 'copyfile' %(path contains a NUL", function() fs.copyfile("a", "b\0") end },
        { "#1 to 'read' %(size out of range%)", function() f:read(-1) end },
        { "#2 to 'read' %(negative offset%)", function() f:read(1, -1) end },
        { "#1 to 'write' %(string expected, got table%)", function() f:write({}) end },
        { "#2 to 'write' %(negative offset%)", function() f:write("x", -5) end },
        { "#1 to 'lines' %(limit must be", function() f:lines({ limit = 0 }) end },
      }
      for _, c in ipairs(cases) do
        local ok, err = pcall(c[2])
        assert.is_false(ok)
        assert.matches("bad argument " .. c[1], tostring(err))
      end
      -- the errors left nothing behind: the File still works
      assert.are.equal("x", f:read())
    end))

    it("outside a task they say so", function()
      local ok, err = pcall(fs.read_file, "/etc/hostname")
      assert.is_false(ok)
      assert.matches("'read_file' called outside a running task", err)
    end)
  end)

  describe("File", function()
    it("modes behave as io.open's", async(function()
      local dir, _ <close> = scratch()
      local path = dir .. "/f"
      local function content() return fs.read_file(path) end
      local w <close> = fs.open(path, "w")
      w:write("hello")
      w:close()
      assert.are.equal("hello", content())
      local a <close> = fs.open(path, "ab")
      a:write(" world")
      a:write("!", 0) -- append mode: the end, whatever the offset
      a:close()
      assert.are.equal("hello world!", content())
      local rp <close> = fs.open(path, "r+b")
      assert.are.equal("hello", rp:read(5))
      rp:write("_")
      rp:close()
      assert.are.equal("hello_world!", content())
      local wp <close> = fs.open(path, "w+")
      assert.is_nil(wp:read()) -- truncated
      wp:write("abc")
      assert.are.equal("abc", wp:read(10, 0))
      wp:close()
      local ap <close> = fs.open(path, "a+")
      assert.are.equal("abc", ap:read()) -- reads from the start
      ap:write("def")
      assert.are.equal("abcdef", ap:read(10, 0))
      ap:close()
      local r <close> = fs.open(path) -- "r" by default
      assert.are.equal("abcdef", r:read())
      assert.are.equal("enoent", kind_of(fs.open, dir .. "/none", "r+"))
    end))

    it("read and write at the position or at offsets; nil at the end", async(function()
      local dir, _ <close> = scratch()
      local f <close> = fs.open(dir .. "/f", "w+")
      assert.are.equal(f, f:write("0123456789"))
      assert.is_nil(f:read(4)) -- the position is after what was written
      assert.are.equal("2345", f:read(4, 2))
      assert.are.equal("", f:read(0))
      f:write("AB", 3)
      assert.are.equal("012AB56789", f:read(100, 0))
      assert.is_nil(f:read(1, 10))
      assert.is_nil(f:read(1, 1000))
      f:write("X", 12) -- leaves a hole of zeros
      assert.are.equal("89\0\0X", f:read(100, 8))
      local st = f:stat()
      assert.are.equal("file", st.type)
      assert.are.equal(13, st.size)
      assert.is_nil(f:sync())
      -- positional reads from a fresh File
      local g <close> = fs.open(dir .. "/f")
      assert.are.equal("012", g:read(3))
      assert.are.equal("AB5", g:read(3))
      assert.are.equal("6789\0\0X", g:read())
      assert.is_nil(g:read())
    end))

    it("lines() streams lines with a bounded buffer", async(function()
      local dir, _ <close> = scratch()
      local path = dir .. "/lines"
      fs.write_file(path, "one\n\ntwo\r\nlast")
      local got = {}
      local f <close> = fs.open(path)
      for line in f:lines() do got[#got + 1] = line end
      assert.are.same({ "one", "", "two\r", "last" }, got)
      -- many lines across chunk boundaries, in bounded memory
      local line = ("%-99s"):format("x")
      local big = assert(io.open(path, "w"))
      for i = 1, 80000 do big:write(line:sub(1, 90), ("%9d"):format(i), "\n") end
      big:close() -- 8 MB
      collectgarbage()
      local base, peak, n = collectgarbage("count"), 0, 0
      local g <close> = fs.open(path)
      for l in g:lines() do
        n = n + 1
        assert(#l == 99 and tonumber(l:sub(91)) == n, l)
        if n % 10000 == 0 then -- what stays alive: the buffer and a line
          collectgarbage()
          peak = math.max(peak, collectgarbage("count") - base)
        end
      end
      assert.are.equal(80000, n)
      assert.is_true(peak < 512, ("peak %.0f KiB"):format(peak))
      -- a line beyond the limit raises "limit"
      fs.write_file(path, ("y"):rep(5000) .. "\nshort\n")
      local h2 <close> = fs.open(path)
      local ok, err = pcall(function()
        for _ in h2:lines({ limit = 1000 }) do end
      end)
      assert.is_false(ok)
      assert.is_true(lunio.is_error(err, "limit"))
      local h3 <close> = fs.open(path)
      local it = h3:lines({ limit = 5000 })
      assert.are.equal(5000, #it())
      assert.are.equal("short", it())
      assert.is_nil(it())
      assert.is_nil(it())
    end))

    it("one task at a time at the position; offsets are free for all", async(function()
      local dir, _ <close> = scratch()
      fs.write_file(dir .. "/f", "abcdefgh")
      local f <close> = fs.open(dir .. "/f", "r+")
      local first = lunio.create_task(f.read, f, 2)
      lunio.sleep(0) -- its request is in flight
      local kind, err = kind_of(f.read, f, 2)
      assert.are.equal("invalid_state", kind)
      assert.matches("position", err.message)
      assert.are.equal("invalid_state", (kind_of(f.write, f, "zz")))
      assert.are.equal("ab", first:await())
      local parts = {}
      for i = 1, 8 do
        parts[i] = lunio.create_task(f.read, f, 1, i - 1)
      end
      for i = 1, 8 do parts[i] = parts[i]:await() end
      assert.are.equal("abcdefgh", table.concat(parts))
      assert.are.equal("cd", f:read(2)) -- the position moved by 2 only
    end))

    it("close: idempotent, <close>, closed Files raise kind 'closed'", async(function()
      local dir, _ <close> = scratch()
      local path = dir .. "/f"
      fs.write_file(path, "x")
      local before = testing.open_fds()
      local f = fs.open(path)
      assert.are.equal(before + 1, testing.open_fds())
      assert.matches("^lunio.File<.*/f>$", tostring(f))
      f:close()
      assert.are.equal(before, testing.open_fds())
      f:close()
      assert.matches("closed>$", tostring(f))
      assert.are.equal("closed", kind_of(f.read, f))
      assert.are.equal("closed", kind_of(f.write, f, "x"))
      assert.are.equal("closed", kind_of(f.stat, f))
      assert.are.equal("closed", kind_of(f.sync, f))
      do
        local _ <close> = fs.open(path)
        assert.are.equal(before + 1, testing.open_fds())
      end
      assert.are.equal(before, testing.open_fds())
      -- closed outside a task (no waiting there)
      local k = fs.open(path)
      lunio.get_running_loop():call_soon(function() k:close() end)
      lunio.sleep(0)
      assert.are.equal(before, testing.open_fds())
    end))

    it("is closed by the collector and by its loop closing", function()
      local dir, _ <close> = scratch()
      local path = dir .. "/f"
      io.open(path, "w"):close()
      collectgarbage()
      local before = testing.open_fds()
      local loop = lunio.new_loop()
      local kept = loop:run(function()
        local n = testing.open_fds()
        fs.open(path) -- dropped at once
        local f = fs.open(path)
        collectgarbage()
        collectgarbage()
        assert.are.equal(n + 1, testing.open_fds())
        return f
      end)
      assert.are.equal(1, loop:open_resources())
      loop:close()
      assert.are.equal(before, testing.open_fds())
      assert.matches("closed>$", tostring(kept))
      local other = lunio.new_loop()
      other:run(function()
        assert.are.equal("closed", kind_of(kept.read, kept))
      end)
      other:close()
    end)

    it("works on pipes, which cannot seek", async(function()
      local dir, _ <close> = scratch()
      local fifo = dir .. "/fifo"
      sh("mkfifo " .. q(fifo))
      local opening = lunio.create_task(fs.open, fifo, "r")
      lunio.sleep(0.02 * scale)
      local w = assert(io.open(fifo, "w"))
      local f <close> = opening:await()
      w:write("line 1\nline 2\n")
      w:close()
      local got = {}
      for line in f:lines() do got[#got + 1] = line end
      assert.are.same({ "line 1", "line 2" }, got)
      assert.are.equal("espipe", (kind_of(f.read, f, 1, 0)))
    end))

    it("belongs to its loop", function()
      local dir, _ <close> = scratch()
      local path = dir .. "/f"
      io.open(path, "w"):close()
      local a, b = h.new_loop(), h.new_loop()
      local f = a:run(fs.open, path)
      b:run(function()
        local kind, err = kind_of(f.read, f)
        assert.are.equal("invalid_state", kind)
        assert.matches("another loop", err.message)
      end)
      b:close()
      a:close()
    end)
  end)

  describe("cancellation", function()
    it("of a request still queued in the pool: nothing happens, nothing leaks", async(function()
      local dir, _ <close> = scratch()
      fs.write_file(dir .. "/f", "data")
      local release = block_pool(dir)
      local calls = {
        { fs.read_file, dir .. "/f" },
        { fs.write_file, dir .. "/w", "data" },
        { fs.append_file, dir .. "/w", "data" },
        { fs.open, dir .. "/f" },
        { fs.stat, dir }, { fs.lstat, dir }, { fs.exists, dir },
        { fs.mkdir, dir .. "/m" }, { fs.rmdir, dir .. "/m" },
        { fs.remove, dir .. "/f" }, { fs.rename, dir .. "/f", dir .. "/g" },
        { fs.copyfile, dir .. "/f", dir .. "/c" },
        { fs.scandir, dir }, { fs.realpath, dir }, { fs.mkdtemp, dir .. "/t-" },
      }
      for _, c in ipairs(calls) do
        local t = lunio.create_task(table.unpack(c))
        lunio.sleep(0)
        assert.are.equal("waiting", t:state())
        t:cancel()
        assert.are.equal("cancelled", (kind_of(t.await, t)))
      end
      release()
      -- the queued requests were taken back: none of them ran
      assert.is_false(fs.exists(dir .. "/w"))
      assert.is_false(fs.exists(dir .. "/m"))
      assert.is_false(fs.exists(dir .. "/c"))
      assert.is_true(fs.exists(dir .. "/f"))
    end, { timeout = 5 }))

    it("of an open running in the pool: the late descriptor is closed", async(function()
      local dir, _ <close> = scratch()
      local fifo = dir .. "/fifo"
      sh("mkfifo " .. q(fifo))
      for _, call in ipairs { fs.open, fs.read_file } do
        local before = testing.open_fds()
        local t = lunio.create_task(call, fifo)
        lunio.sleep(0.02 * scale) -- blocked in open(2) in a pool thread
        t:cancel()
        assert.are.equal("cancelled", (kind_of(t.await, t)))
        -- a writer arrives: the open completes for nobody (the shell's
        -- open could not succeed without it) ...
        sh("timeout 5 sh -c ': >" .. fifo .. "'")
        -- ... and the request's cleanup closes what it opened
        eventually(function() return testing.open_fds() == before end, "the fd to close")
      end
    end))

    it("of a read running in the pool on a pipe: the File stays usable", async(function()
      local dir, _ <close> = scratch()
      local fifo = dir .. "/fifo"
      sh("mkfifo " .. q(fifo))
      local opening = lunio.create_task(fs.open, fifo, "r")
      lunio.sleep(0.02 * scale)
      local w = assert(io.open(fifo, "w"))
      w:setvbuf("no")
      local f <close> = opening:await()
      local reader = lunio.create_task(f.read, f, 100)
      lunio.sleep(0.02 * scale) -- blocked in read(2)
      reader:cancel()
      assert.are.equal("cancelled", (kind_of(reader.await, reader)))
      w:write("first") -- consumed by the abandoned read
      lunio.sleep(0.02 * scale)
      w:write("second")
      assert.are.equal("second", f:read(100))
      w:close()
      assert.is_nil(f:read(100))
    end))

    it("after the request finished: the result is dropped, the position kept", async(function()
      local dir, _ <close> = scratch()
      fs.write_file(dir .. "/f", "0123456789")
      local f <close> = fs.open(dir .. "/f", "r+")
      local reader = lunio.create_task(f.read, f, 4)
      cancel_when_woken(reader)
      assert.are.equal("cancelled", (kind_of(reader.await, reader)))
      assert.are.equal("0123", f:read(4)) -- the cancelled read consumed nothing
      local writer = lunio.create_task(f.write, f, "ab")
      cancel_when_woken(writer)
      assert.are.equal("cancelled", (kind_of(writer.await, writer)))
      assert.are.equal("0123ab6789", f:read(10, 0)) -- it did reach the file
      f:write("cd") -- after it, not over it
      assert.are.equal("0123abcd89", f:read(10, 0))
      -- whole-file calls: read_file at each of its steps, write_file, open
      for step = 1, 4 do
        local t = lunio.create_task(fs.read_file, dir .. "/f")
        for _ = 2, step do
          while t:state() == "waiting" do lunio.sleep(0) end
          while t:state() ~= "waiting" and not t:done() do lunio.sleep(0) end
        end
        if not t:done() then cancel_when_woken(t) end
        pcall(t.await, t)
      end
      for _, c in ipairs {
        { fs.open, dir .. "/f" }, { fs.write_file, dir .. "/g", "x" },
        { fs.stat, dir }, { fs.scandir, dir }, { fs.realpath, dir },
        { fs.mkdtemp, dir .. "/t-" },
      } do
        local t = lunio.create_task(table.unpack(c))
        cancel_when_woken(t)
        assert.are.equal("cancelled", (kind_of(t.await, t)))
      end
    end))

    it("at random moments leaves no descriptor and no task behind", async(function()
      local dir, _ <close> = scratch()
      fs.write_file(dir .. "/f", ("z"):rep(100000))
      local f <close> = fs.open(dir .. "/f", "r+")
      local ops = {
        function() return fs.read_file(dir .. "/f") end,
        function() fs.write_file(dir .. "/w", "data") end,
        function() return fs.open(dir .. "/f"):close() end,
        function() local g <close> = fs.open(dir .. "/f"); return g:read(10) end,
        function() return f:read(10, 5) end,
        function() return f:write("z", 7) end,
        function() return f:stat() end,
      }
      math.randomseed(11)
      for i = 1, 140 do
        local t = lunio.create_task(ops[i % #ops + 1])
        for _ = 1, math.random(0, 4) do lunio.sleep(0) end
        t:cancel()
        pcall(t.await, t)
      end
      assert.are.equal(("z"):rep(100000), f:read(200000, 0))
    end, { timeout = 5 }))

    it("of close(): the descriptor is closed all the same", async(function()
      local dir, _ <close> = scratch()
      fs.write_file(dir .. "/f", "x")
      local before = testing.open_fds()
      local f = fs.open(dir .. "/f")
      local closing = lunio.create_task(f.close, f)
      lunio.sleep(0)
      closing:cancel()
      pcall(closing.await, closing)
      eventually(function() return testing.open_fds() == before end, "the close")
      assert.are.equal("closed", (kind_of(f.read, f)))
    end))

    it("of a File's loop while requests are in flight closes it afterwards", function()
      local dir, _ <close> = scratch()
      local fifo = dir .. "/fifo"
      sh("mkfifo " .. q(fifo))
      collectgarbage()
      local before = testing.open_fds()
      local loop = lunio.new_loop()
      local f, w = loop:run(function()
        local opening = lunio.create_task(fs.open, fifo, "r")
        lunio.sleep(0.02 * scale)
        local w = assert(io.open(fifo, "w"))
        local file = opening:await()
        -- a read blocks in the pool; its task is cancelled when run()
        -- returns, the read stays in the pool
        lunio.create_task(file.read, file, 10)
        lunio.sleep(0.02 * scale)
        return file, w
      end)
      -- a writer that ends the read while the loop is closing
      sh("(sleep 0.2; printf x >" .. q(fifo) .. ") &")
      loop:close() -- waits for the read, then closes the descriptor
      w:close()
      assert.matches("closed>$", tostring(f))
      collectgarbage()
      assert.are.equal(before, testing.open_fds())
    end)
  end)
end)
