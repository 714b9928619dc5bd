-- W5 http-client on lunio: COUNT GETs of URL with CONC in flight, CONC
-- worker tasks sharing one lunio.http.Session (keep-alive pool,
-- max_per_host = CONC).   usage: lua5.4 bench/lunio/w5.lua URL COUNT CONC
-- BENCH_TUNE_ALLOCATOR=1 calls lunio.tune_allocator() first (what the
-- lunio command does; a library never does it on require).
local dir = (arg and arg[0] or ""):match("^(.*)/") or "."
package.path = dir .. "/../lib/?.lua;" .. package.path
local util = require "util"
local lunio = require "lunio"
local http = require "lunio.http"

local URL = assert(arg[1], "usage: w5.lua URL COUNT CONC")
local COUNT = util.arg_int(2, 20000)
local CONC = util.arg_int(3, 64)
if os.getenv("BENCH_TUNE_ALLOCATOR") == "1" then lunio.tune_allocator() end

lunio.run(function()
  local session <close> = http.Session({ max_per_host = CONC })
  local remaining, total, bad = COUNT, 0, 0
  local function worker()
    while remaining > 0 do
      remaining = remaining - 1
      local r = session:get(URL)
      total = total + #r.body
      if r.status ~= 200 then bad = bad + 1 end
    end
  end
  local t0 = util.now()
  local workers = {}
  for i = 1, CONC do workers[i] = lunio.create_task(worker) end
  for i = 1, CONC do workers[i]:await() end
  local elapsed = util.now() - t0
  assert(bad == 0, bad .. " non-200 responses")
  util.result({ "req_per_s", COUNT / elapsed },
    { "mb_per_s", total / elapsed / 1e6 }, { "elapsed_s", elapsed },
    { "requests", COUNT }, { "bytes", total })
end)
