-- Hashes every file under a directory: lunio.fs walks the tree and reads
-- the files on libuv's pool, lunio.to_thread runs the hash (32-bit FNV-1a,
-- in pure Lua) on the loop's worker threads, a few tasks work at once,
-- and a progress line keeps count on stderr. Prints "hash  size  path"
-- for each file, sorted by path, then a summary.
--
--   lua5.4 examples/parallel_hash.lua [DIR] [-j TASKS]
--
-- Files are read 1 MiB at a time: the hash state goes to the worker with
-- each chunk and comes back updated, so a big file never sits in memory
-- whole. Unreadable files and directories are reported, not fatal.
local lunio = require "lunio"
local fs = lunio.fs

local CHUNK = 1024 * 1024

-- Runs in a worker thread: its only upvalue is _ENV (string, math ...).
-- Returns the FNV-1a state after `data`, starting from `h`.
local function fnv1a(h, data)
  local byte = string.byte
  for i = 1, #data - 7, 8 do -- eight bytes per call to string.byte
    local b1, b2, b3, b4, b5, b6, b7, b8 = byte(data, i, i + 7)
    h = ((h ~ b1) * 16777619) & 0xffffffff
    h = ((h ~ b2) * 16777619) & 0xffffffff
    h = ((h ~ b3) * 16777619) & 0xffffffff
    h = ((h ~ b4) * 16777619) & 0xffffffff
    h = ((h ~ b5) * 16777619) & 0xffffffff
    h = ((h ~ b6) * 16777619) & 0xffffffff
    h = ((h ~ b7) * 16777619) & 0xffffffff
    h = ((h ~ b8) * 16777619) & 0xffffffff
  end
  for i = #data - (#data % 8) + 1, #data do
    h = ((h ~ byte(data, i)) * 16777619) & 0xffffffff
  end
  return h
end

local FNV_OFFSET = 2166136261

local function parse_args(argv)
  local o = { dir = ".", tasks = 4 }
  local i = 1
  while argv[i] do
    if argv[i] == "-j" then
      o.tasks = tonumber(argv[i + 1])
      i = i + 2
    else
      o.dir = argv[i]
      i = i + 1
    end
  end
  if not o.tasks or o.tasks < 1 then
    io.stderr:write("usage: parallel_hash.lua [DIR] [-j TASKS]\n")
    os.exit(2)
  end
  return o
end

-- Every regular file under dir (symbolic links are not followed).
local function walk(dir, files, problems)
  local ok, err = lunio.pcall(function()
    for name, type in fs.scandir(dir) do
      local path = dir .. "/" .. name
      if type == "directory" then
        walk(path, files, problems)
      elseif type == "file" then
        files[#files + 1] = path
      end
    end
  end)
  if not ok then problems[#problems + 1] = { path = dir, err = err } end
  return files, problems
end

-- Hashes one file chunk by chunk; returns the hash and the size.
local function hash_file(path)
  local f <close> = fs.open(path, "rb")
  local h, size = FNV_OFFSET, 0
  while true do
    local chunk = f:read(CHUNK)
    if not chunk then break end
    h = lunio.to_thread(fnv1a, h, chunk)
    size = size + #chunk
  end
  return ("%08x"):format(h), size
end

local function main(o)
  local t0 = lunio.now()
  local files, problems = walk(o.dir, {}, {})
  table.sort(files)
  local results, done, bytes = {}, 0, 0
  local function progress()
    io.stderr:write(("\r[%d/%d] %.1f MB"):format(done, #files, bytes / 1e6))
  end
  local next_file = 0
  local function worker()
    while next_file < #files do
      next_file = next_file + 1
      local path = files[next_file]
      local ok, hash, size = lunio.pcall(hash_file, path)
      if ok then
        results[path] = { hash = hash, size = size }
        bytes = bytes + size
      else
        problems[#problems + 1] = { path = path, err = hash }
      end
      done = done + 1
      progress()
    end
  end
  do
    local tg <close> = lunio.TaskGroup()
    for _ = 1, math.min(o.tasks, math.max(#files, 1)) do tg:spawn(worker) end
  end
  progress()
  io.stderr:write("\n")
  for _, path in ipairs(files) do
    local r = results[path]
    if r then print(("%s  %10d  %s"):format(r.hash, r.size, path)) end
  end
  for _, p in ipairs(problems) do
    local kind = lunio.is_error(p.err) and p.err.kind or tostring(p.err)
    io.stderr:write(("error: %s: %s\n"):format(p.path, kind))
  end
  local hashed = 0
  for _ in pairs(results) do hashed = hashed + 1 end
  print(("%d files, %d bytes hashed in %.2f s, %d errors"):format(
    hashed, bytes, lunio.now() - t0, #problems))
  return #problems == 0
end

if not lunio.run(main, parse_args(arg)) then os.exit(1) end
