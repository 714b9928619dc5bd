---@meta lunio.subprocess
-- LuaLS definitions of lunio.subprocess (`require "lunio.subprocess"`,
-- also `require("lunio").subprocess`): child processes. Pipes are
-- lunio.Streams (lunio.stream.lua). See docs/subprocess.md.

---Options of `exec` (and `run`).
---@class lunio.subprocess.Opts
---@field cwd? string working directory of the child (default: ours)
---@field env? table<string, string|number> the child's whole environment (default: ours); extend ours with `subprocess.environ()`
---@field stdin? "inherit"|"pipe"|"null" default "inherit"
---@field stdout? "inherit"|"pipe"|"null" default "inherit" ("pipe" in run)
---@field stderr? "inherit"|"pipe"|"null" default "inherit" ("pipe" in run)
---@field kill_grace? number seconds between SIGTERM and SIGKILL when lunio stops the child (default 2)

---Options of `run`.
---@class lunio.subprocess.RunOpts: lunio.subprocess.Opts
---@field input? string written to stdin, which is then closed (stdin is "pipe" by default then)
---@field timeout? number seconds before the child is stopped and kind "timeout" raised
---@field check? boolean raise kind "process_failed" unless the exit code is 0

---What `run` returns.
---@class lunio.subprocess.Result
---@field code integer? the exit code; nil when a signal ended the child
---@field signal string? that signal's name ("SIGTERM"), or nil
---@field stdout string? what the child wrote, when captured
---@field stderr string? what it wrote to stderr, when captured

---A child process (`subprocess.exec`), `<close>`-able: closing stops a
---child still running (SIGTERM, SIGKILL after kill_grace) and reaps it.
---@class lunio.Process
---@field pid integer the child's process id
---@field argv string[] the command (a copy)
---@field stdin lunio.Stream? write to the child, when piped
---@field stdout lunio.Stream? the child's output, when piped
---@field stderr lunio.Stream? the child's stderr, when piped
local Process = {}

---Waits for the exit: `code, nil`, or `nil, signal` when a signal ended
---the child. Cancelling it stops the child (SIGTERM, SIGKILL after
---kill_grace) and reaps it before the cancellation propagates.
---@async
---@return integer? code
---@return string? signal
function Process:wait() end

---Sends a signal (name or number; default "SIGTERM"). False when the
---child exited already (nothing sent).
---@param sig? string|integer
---@return boolean
function Process:kill(sig) end

---How the child ended, without waiting: `code, nil` or `nil, signal`;
---nothing while it runs.
---@return integer? code
---@return string? signal
function Process:poll() end

---Writes `input` and closes stdin, reads stdout and stderr to their end
---at the same time, waits for the exit: `stdout, stderr, code, signal`
---(nil for outputs not piped). Once per process.
---@async
---@param input? string
---@return string? stdout
---@return string? stderr
---@return integer? code
---@return string? signal
function Process:communicate(input) end

---Closes the pipes; stops (SIGTERM, SIGKILL after kill_grace) and reaps
---a child still running. Idempotent.
---@async
function Process:close() end

---@class lunio.subprocess
local subprocess = {}

---Starts `argv[1]` with the arguments `argv` (no shell; PATH is searched
---when the program has no "/"). A program that cannot be started raises
---its libuv error kind ("enoent", "eacces") with `.path` and `.argv`.
---@param argv string[]
---@param opts? lunio.subprocess.Opts
---@return lunio.Process
function subprocess.exec(argv, opts) end

---Runs `argv` to its end: `{code=, signal=, stdout=, stderr=}`, outputs
---captured unless opts send them elsewhere. `opts.timeout` stops the
---child and raises kind "timeout" (with `.stdout`, `.stderr` so far);
---`opts.check` raises kind "process_failed" unless the code is 0.
---@async
---@param argv string[]
---@param opts? lunio.subprocess.RunOpts
---@return lunio.subprocess.Result
function subprocess.run(argv, opts) end

---A copy of this process's environment, name -> value.
---@return table<string, string>
function subprocess.environ() end

return subprocess
