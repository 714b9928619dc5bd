--- lunio.fs: files and directories on libuv's thread pool.
--
-- Every function suspends only the calling task: the system call runs in
-- libuv's worker pool and the task resumes when it is done. Failures raise
-- a lunio error whose `kind` is the libuv error name in lower case
-- ("enoent", "eacces", "eexist", ...) with `.path` (and `.dest` for
-- rename and copyfile). The requests themselves are in src/fs.c; this file
-- adds what reads better in Lua (mkdir with parents, File:lines) and the
-- documentation. Reference and guide: docs/fs.md.
local core = require "lunio.core"
local arg_error = require("lunio.util").arg_error

local cfs = core.fs
local File = cfs.File -- the methods of lunio.File (made in C)

local type, error, pcall = type, error, pcall
local math_type = math.type
local is_error, new_error = core.is_error, core.new_error

local fs = {}

---An open file (`fs.open`). Its methods suspend the calling task; the
---descriptor is closed by `close()`, `<close>`, garbage collection or its
---loop closing.
---
---`read(n, offset)`: up to `n` bytes (default 65536), nil at the end;
---without `offset` at the file's position, which it moves.
---`write(data, offset)`: writes all of `data` and returns the File;
---without `offset` at the file's position (moving it), in append mode
---always at the end. `stat()`: as `fs.stat`. `sync()`: fsync.
---`close()`: idempotent; in a task it waits for the close.
---@class lunio.File
---@field read fun(self: lunio.File, n?: integer, offset?: integer): string?
---@field write fun(self: lunio.File, data: string, offset?: integer): lunio.File
---@field stat fun(self: lunio.File): lunio.fs.Stat
---@field sync fun(self: lunio.File)
---@field close fun(self: lunio.File)

---@class lunio.fs.Stat
---@field type "file"|"directory"|"link"|"fifo"|"socket"|"char"|"block"|"unknown"
---@field size integer
---@field mode integer permission bits (`mode & 0x1ff` for rwx)
---@field uid integer
---@field gid integer
---@field ino integer
---@field dev integer
---@field nlink integer
---@field atime number seconds since the epoch
---@field mtime number seconds since the epoch
---@field ctime number seconds since the epoch

local function check_opts(opts, n, fname)
  if opts ~= nil and type(opts) ~= "table" then
    arg_error(n, fname, "table expected, got " .. type(opts))
  end
  return opts or {}
end

-- Most functions are the C functions themselves: no extra call, and their
-- argument errors point at the caller's line. The annotations describe
-- them for LuaLS.
local mkdir, stat, copyfile = cfs.mkdir, cfs.stat, cfs.copyfile

---Reads the whole file at `path`. Large files are read in chunks of 4 MiB,
---each a separate trip through the pool, so other tasks keep running.
---@async
---@type fun(path: string): string
fs.read_file = cfs.read_file

---Writes `data` to `path`, creating the file or truncating it.
---@async
---@type fun(path: string, data: string)
fs.write_file = cfs.write_file

---Appends `data` to `path`, creating the file if needed.
---@async
---@type fun(path: string, data: string)
fs.append_file = cfs.append_file

---Opens `path` with a mode of `io.open`: "r" (default), "w", "a", "r+",
---"w+", "a+", each optionally followed by "b" (ignored).
---@async
---@type fun(path: string, mode?: string): lunio.File
fs.open = cfs.open

---Information about `path` (following symbolic links).
---@async
---@type fun(path: string): lunio.fs.Stat
fs.stat = cfs.stat

---Information about `path` itself (a symbolic link is not followed).
---@async
---@type fun(path: string): lunio.fs.Stat
fs.lstat = cfs.lstat

---Whether `path` exists (following symbolic links: a dangling link does
---not). Only "enoent" and "enotdir" mean false; other failures raise.
---@async
---@type fun(path: string): boolean
fs.exists = cfs.exists

---Removes the empty directory `path`.
---@async
---@type fun(path: string)
fs.rmdir = cfs.rmdir

---Removes the file (or link, socket, ...) `path`; directories need `rmdir`.
---@async
---@type fun(path: string)
fs.remove = cfs.remove

---Renames `path` to `dest`, replacing `dest` if it exists.
---@async
---@type fun(path: string, dest: string)
fs.rename = cfs.rename

---Lists the directory `path`: an iterator of `name, type` (type as in
---`fs.stat`), sorted by name, without "." and "..". The listing is read
---in one request; iterating does not wait.
---@async
---@type fun(path: string): (fun(): string?, string?)
fs.scandir = cfs.scandir

---The canonical absolute path of `path` (links and ".." resolved).
---@async
---@type fun(path: string): string
fs.realpath = cfs.realpath

---Creates a new directory named `prefix` followed by six random characters
---and returns its path (`fs.mkdtemp("/tmp/job-")`).
---@async
---@type fun(prefix: string): string
fs.mkdtemp = cfs.mkdtemp

local function check_path(path, n, fname)
  if type(path) ~= "string" then
    arg_error(n, fname, "string expected, got " .. type(path))
  elseif path:find("\0", 1, true) then
    arg_error(n, fname, "path contains a NUL byte")
  end
end

-- mkdir -p: creates the missing parents, and succeeds when `path` is a
-- directory already.
local function mkdir_parents(path, mode)
  local ok, err = pcall(mkdir, path, mode)
  if ok then return end
  if is_error(err, "enoent") then
    local parent = path:match("^(.*[^/])/+[^/]+/*$")
    if parent then
      mkdir_parents(parent, mode)
      ok, err = pcall(mkdir, path, mode)
      if ok then return end
    end
  end
  -- "eexist" is fine for a directory (made meanwhile by someone else, too)
  if is_error(err, "eexist") and stat(path).type == "directory" then return end
  error(err, 0)
end

---Creates the directory `path`. `opts.parents`: create missing parents
---and accept an existing directory (mkdir -p). `opts.mode`: permission
---bits (default 0x1ff, i.e. 0777, less the umask).
---@async
---@param path string
---@param opts? {parents?: boolean, mode?: integer}
function fs.mkdir(path, opts)
  check_path(path, 1, "mkdir")
  opts = check_opts(opts, 2, "mkdir")
  local mode = opts.mode
  if mode ~= nil and (math_type(mode) ~= "integer" or mode < 0 or mode > 4095) then
    arg_error(2, "mkdir", "mode must be an integer from 0 to 0x0fff")
  end
  if opts.parents then
    mkdir_parents(path, mode)
  else
    mkdir(path, mode)
  end
end

---Copies the file `path` to `dest` (replacing it; `opts.exclusive`: fail
---with "eexist" instead).
---@async
---@param path string
---@param dest string
---@param opts? {exclusive?: boolean}
function fs.copyfile(path, dest, opts)
  check_path(path, 1, "copyfile")
  check_path(dest, 2, "copyfile")
  opts = check_opts(opts, 3, "copyfile")
  copyfile(path, dest, opts.exclusive)
end

local LINES_CHUNK = 65536
local LINES_LIMIT = 1024 * 1024

---An iterator over the lines of the file from its position, without the
---"\n" (a last line without one is returned too). Reads 64 KiB at a time
---and holds at most one line plus one chunk: a line longer than
---`opts.limit` bytes (default 1 MiB) raises kind "limit".
---@async
---@param opts? {limit?: integer}
---@return fun(): string?
function File:lines(opts)
  opts = check_opts(opts, 1, "lines")
  local limit = opts.limit or LINES_LIMIT
  if math_type(limit) ~= "integer" or limit < 1 then
    arg_error(1, "lines", "limit must be a positive integer")
  end
  local buf, pos, scan, eof = "", 1, 1, false
  local function too_long()
    error(new_error("limit", ("line longer than %d bytes"):format(limit)), 3)
  end
  return function()
    while true do
      local nl = buf:find("\n", scan, true)
      if nl then
        if nl - pos > limit then too_long() end
        local line = buf:sub(pos, nl - 1)
        pos, scan = nl + 1, nl + 1
        return line
      end
      if #buf - pos + 1 > limit then too_long() end
      if eof then
        if pos > #buf then return nil end
        local line = buf:sub(pos)
        pos, scan = #buf + 1, #buf + 1
        return line
      end
      local chunk = self:read(LINES_CHUNK)
      if chunk == nil then
        eof = true
      else
        buf = buf:sub(pos) .. chunk
        scan = #buf - #chunk + 1
        pos = 1
      end
    end
  end
end

fs.File = File

return fs
