---@meta lunio.fs
-- LuaLS definitions of lunio.fs (`require "lunio.fs"`, also
-- `require("lunio").fs`): files and directories on libuv's thread pool.
-- Every function suspends only the calling task; failures raise kind =
-- the libuv error name ("enoent", "eacces", ...) with `.path`. See
-- docs/fs.md.

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

---An open file (`fs.open`), `<close>`-able.
---@class lunio.File
local File = {}

---Up to `n` bytes (default 65536), nil at the end; without `offset`, at
---the file's position, which it moves.
---@async
---@param n? integer
---@param offset? integer
---@return string?
function File:read(n, offset) end

---Writes all of `data`; without `offset` at the file's position.
---@async
---@param data string
---@param offset? integer
---@return lunio.File
function File:write(data, offset) end

---An iterator over the lines from the file's position, without "\n";
---a line longer than `opts.limit` (default 1 MiB) raises kind "limit".
---@async
---@param opts? {limit?: integer}
---@return fun(): string?
function File:lines(opts) end

---@async
---@return lunio.fs.Stat
function File:stat() end

---fsync.
---@async
function File:sync() end

---Idempotent; in a task it waits for the close.
function File:close() end

---@class lunio.fs
---@field File lunio.File the File methods
local fs = {}

---@async
---@param path string
---@return string
function fs.read_file(path) end

---@async
---@param path string
---@param data string
function fs.write_file(path, data) end

---@async
---@param path string
---@param data string
function fs.append_file(path, data) end

---Opens `path` with a mode of io.open ("r", "w", "a", "r+", "w+", "a+",
---optionally followed by "b").
---@async
---@param path string
---@param mode? string
---@return lunio.File
function fs.open(path, mode) end

---@async
---@param path string
---@return lunio.fs.Stat
function fs.stat(path) end

---@async
---@param path string
---@return lunio.fs.Stat
function fs.lstat(path) end

---@async
---@param path string
---@return boolean
function fs.exists(path) end

---@async
---@param path string
---@param opts? {parents?: boolean, mode?: integer}
function fs.mkdir(path, opts) end

---@async
---@param path string
function fs.rmdir(path) end

---@async
---@param path string
function fs.remove(path) end

---@async
---@param path string
---@param dest string
function fs.rename(path, dest) end

---@async
---@param path string
---@param dest string
---@param opts? {exclusive?: boolean}
function fs.copyfile(path, dest, opts) end

---An iterator of `name, type` over the directory `path`, sorted by name.
---@async
---@param path string
---@return fun(): string?, string?
function fs.scandir(path) end

---@async
---@param path string
---@return string
function fs.realpath(path) end

---Creates `prefix` followed by six random characters; returns its path.
---@async
---@param prefix string
---@return string
function fs.mkdtemp(prefix) end

return fs
