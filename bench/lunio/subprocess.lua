-- Figures of lunio.subprocess (issue 11), not part of bench/run:
--
--   LUA_PATH='lua/?.lua;lua/?/init.lua' LUA_CPATH='build/?.so' \
--     lua5.4 bench/lunio/subprocess.lua [MiB] [spawns]
--
-- 1. Spawn + wait round trip of `true` (µs per child): exec():wait() one
--    after the other, and run() (which also makes and closes two pipes),
--    next to os.execute("true") (fork + exec of /bin/sh, which runs true).
-- 2. MiB (default 100) of `yes | head -c` read through a pipe by run()
--    (MB/s), next to the same shell pipeline writing to /dev/null.
-- Medians of 5 runs.
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
package.path = dir .. "/../lib/?.lua;" .. package.path
local util = require "util"
local lunio = require "lunio"
local sp = lunio.subprocess

local mib = tonumber(arg[1]) or 100
local spawns = tonumber(arg[2]) or 500

local median = util.median
local function timed(fn) return util.timed(fn, lunio.now) end

lunio.run(function()
  local exec_wait, run, os_exec = {}, {}, {}
  for i = 1, 5 do
    exec_wait[i] = timed(function()
      for _ = 1, spawns do
        local p <close> = sp.exec({ "true" })
        p:wait()
      end
    end) / spawns
    run[i] = timed(function()
      for _ = 1, spawns do sp.run({ "true" }) end
    end) / spawns
    os_exec[i] = timed(function()
      for _ = 1, spawns do os.execute("true") end
    end) / spawns
  end
  print(("spawn+wait of true, %d children, median of 5 runs:"):format(spawns))
  print(("  exec():wait()        %7.0f us"):format(median(exec_wait) * 1e6))
  print(("  run() (2 pipes)      %7.0f us"):format(median(run) * 1e6))
  print(("  os.execute('true')   %7.0f us"):format(median(os_exec) * 1e6))

  local bytes = mib * 1024 * 1024
  local cmd = "yes | head -c " .. bytes
  local piped, shell = {}, {}
  for i = 1, 5 do
    piped[i] = timed(function()
      local r = sp.run({ "sh", "-c", cmd })
      assert(#r.stdout == bytes)
    end)
    collectgarbage()
    shell[i] = timed(function() os.execute(cmd .. " >/dev/null") end)
  end
  print(("%d MiB of `yes | head -c`, median of 5 runs:"):format(mib))
  print(("  run() through a pipe %7.0f MB/s (%.3f s)"):format(bytes / median(piped) / 1e6,
    median(piped)))
  print(("  shell >/dev/null     %7.0f MB/s (%.3f s)"):format(bytes / median(shell) / 1e6,
    median(shell)))
end)
