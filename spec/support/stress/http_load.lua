-- Load: N concurrent HTTP fetches through one Session (started by
-- spec/stress_load_spec.lua in a child whose descriptor limit is raised
-- with `ulimit -n`):
--
--   lua5.4 spec/support/stress/http_load.lua URL [N] [ROUNDS] [CYCLES]
--
-- URL is the nginx fixture's /pause (half a second per answer), so the N
-- transfers (default 5,000) are in flight at the same time: the Session
-- allows N connections. Each body must be "pause done\n". One Session
-- serves ROUNDS rounds (default 2; the later ones reuse its connections),
-- then is closed; CYCLES times (default 2). Prints:
--   start   tasks= handles= resources= fds= heap= rss= rss_trim= lua=
--   round   cycle= round= n= seconds= peak_fetching= peak_active=
--           peak_fds= peak_rss=                      then the fields above
--   closed  cycle=     (after session:close())       the fields above
--   ok
-- peak_fetching counts the tasks inside session:get at once, peak_active
-- the transfers libcurl drives at once (sampled every 10 ms).
local S = require "support.stress"
local lunio = require "lunio"
local http = lunio.http

local URL = assert(arg[1], "usage: http_load.lua URL [N] [ROUNDS]")
local N = math.tointeger(tonumber(arg[2] or "")) or 5000
local ROUNDS = math.tointeger(tonumber(arg[3] or "")) or 2
local CYCLES = math.tointeger(tonumber(arg[4] or "")) or 2
local BODY = "pause done\n"

local sample = S.settled_sample

lunio.run(function()
  local loop = lunio.get_running_loop()
  -- warm-up: libcurl's and the thread pool's one-time allocations
  do
    local s <close> = http.Session()
    assert(s:get(URL).body == BODY)
  end
  S.line("start", sample(loop))
  for cycle = 1, CYCLES do
    local session <close> = http.Session({ max_connections = N })
    for round = 1, ROUNDS do
      local peak = { fetching = 0, active = 0, fds = 0, rss = 0 }
      local fetching = 0
      local sampler = lunio.spawn(function()
        while true do
          peak.active = math.max(peak.active, session:stats().active)
          peak.fds = math.max(peak.fds, lunio.testing.open_fds())
          peak.rss = math.max(peak.rss, S.rss_kb())
          lunio.sleep(0.01)
        end
      end)
      local t0 = lunio.now()
      local tasks = {}
      for i = 1, N do
        tasks[i] = lunio.spawn(function()
          fetching = fetching + 1
          peak.fetching = math.max(peak.fetching, fetching)
          local r = session:get(URL)
          fetching = fetching - 1
          if r.status ~= 200 or r.body ~= BODY then
            error(("fetch %d: status %d, body %q"):format(i, r.status, r.body))
          end
          return 1
        end)
      end
      local got = 0
      for _, v in ipairs(lunio.gather(tasks)) do got = got + v end
      local seconds = lunio.now() - t0
      sampler:cancel()
      pcall(sampler.await, sampler)
      tasks = nil -- luacheck: ignore
      assert(got == N, "lost fetches")
      S.line("round", sample(loop, { cycle = cycle, round = round, n = N,
        seconds = seconds, peak_fetching = peak.fetching,
        peak_active = peak.active, peak_fds = peak.fds, peak_rss = peak.rss }))
    end
    session:close()
    lunio.sleep(0.05) -- the sockets' close callbacks
    S.line("closed", sample(loop, { cycle = cycle }))
  end
end)
S.line("ok")
