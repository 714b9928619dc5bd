-- Figures of issue 11 (files and threads), not part of bench/run:
--
--   LUA_PATH='lua/?.lua;lua/?/init.lua' LUA_CPATH='build/?.so' \
--     lua5.4 bench/lunio/fs_thread.lua [MiB]
--
-- 1. fs.read_file of a file of MiB mebibytes (default 256; random bytes,
--    in the page cache) next to `cat file >/dev/null` and io.open():read("a").
-- 2. lunio.to_thread round trip: sequential calls of a function returning
--    its argument (µs per call), and the throughput with 64 calls in flight.
-- Medians of 5 runs. Thread wake-ups dominate the round trip: expect
-- noise when other processes use the CPUs.
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
package.path = dir .. "/../lib/?.lua;" .. package.path
local util = require "util"
local lunio = require "lunio"
local fs = lunio.fs

local mib = tonumber(arg[1]) or 256

local median = util.median
local function timed(fn) return util.timed(fn, lunio.now) end

lunio.run(function()
  local path = os.tmpname()
  assert(os.execute(("head -c %dM /dev/urandom >%s && cat %s >/dev/null"):format(mib, path, path)))
  local bytes = mib * 1024 * 1024
  local rf, cat, io_read = {}, {}, {}
  for i = 1, 5 do
    rf[i] = timed(function()
      local s = fs.read_file(path)
      assert(#s == bytes)
    end)
    collectgarbage()
    cat[i] = timed(function() os.execute("cat " .. path .. " >/dev/null") end)
    io_read[i] = timed(function()
      local f = assert(io.open(path, "rb"))
      assert(#f:read("a") == bytes)
      f:close()
    end)
    collectgarbage()
  end
  os.remove(path)
  local function mbs(t) return bytes / t / 1e6 end
  print(("read_file %d MiB: %.3f s = %.0f MB/s"):format(mib, median(rf), mbs(median(rf))))
  print(("cat >/dev/null:   %.3f s = %.0f MB/s"):format(median(cat), mbs(median(cat))))
  print(("io.read('a'):     %.3f s = %.0f MB/s"):format(median(io_read),
    mbs(median(io_read))))

  local function id(x) return x end
  local n = 20000
  lunio.to_thread(id, 0) -- warm up: the first call starts a worker
  local seq = {}
  for r = 1, 5 do
    seq[r] = timed(function()
      for i = 1, n do lunio.to_thread(id, i) end
    end) / n
  end
  local best = math.huge
  for _, v in ipairs(seq) do best = math.min(best, v) end
  print(("to_thread round trip, sequential: %.1f us per call (best run %.1f us)")
    :format(median(seq) * 1e6, best * 1e6))
  local par = {}
  for r = 1, 5 do
    par[r] = timed(function()
      local tasks, next_i = {}, 0
      for w = 1, 64 do
        tasks[w] = lunio.create_task(function()
          while next_i < n do
            next_i = next_i + 1
            lunio.to_thread(id, next_i)
          end
        end)
      end
      for w = 1, 64 do tasks[w]:await() end
    end)
  end
  print(("to_thread, 64 in flight: %.0f calls/s"):format(n / median(par)))
end)
