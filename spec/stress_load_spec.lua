-- Reliability gate (issue 14), load: many tasks and many transfers in one
-- process, and nothing left behind. Tagged #stress: `make check-stress`
-- runs it, `make test` does not. Each case runs a child lua5.4 (a clean
-- process to measure) and prints its figures (spec/stream_stress_spec.lua
-- runs a longer 5,000-connection TCP load; the tcp case here runs the same
-- shape of load through the stress harness).
--
-- Sizes: CI's by default, STRESS_FULL=1 for the full ones; LOAD_TASKS,
-- LOAD_WINDOW, LOAD_FETCHES override.
local S = require "support.stress"
local nginx = require "support.nginx"

local TASKS = S.size("LOAD_TASKS", 1000000, 1000000)
local WINDOW = S.size("LOAD_WINDOW", 10000, 10000)
local ALL_AT_ONCE = S.full and 2 or 0
local FETCHES = S.size("LOAD_FETCHES", 5000, 5000)
local CONNECTIONS = S.size("LOAD_CONNECTIONS", 5000, 5000)

local field, find = S.field, S.find

-- `after` within `pct` % (plus `slack`) of `before`, for figure `name`.
local function within(name, before, after, pct, slack, line)
  local a, b = field(after, name), field(before, name)
  assert.is_number(a, line or after)
  assert.is_number(b, line or before)
  assert.is_true(a <= b * (1 + pct / 100) + (slack or 0) and a >= b * (1 - pct / 100)
    - (slack or 0), ("%s: %s -> %s (over %d %%)"):format(name, b, a, pct))
end

local CASES = {
  {
    name = "tasks",
    run = function()
      local lines, code, text = S.child("spec/support/stress/tasks.lua",
        { TASKS, WINDOW, ALL_AT_ONCE })
      assert.are.equal(0, code, text)
      assert.are.equal("ok", lines[#lines])
      local start, after = find(lines, "start "), find(lines, "windowed ")
      assert.are.equal(TASKS, field(after, "n"))
      -- nothing pending, no handle, no resource, no descriptor left
      for _, k in ipairs({ "tasks", "handles", "resources", "fds" }) do
        assert.are.equal(field(start, k), field(after, k), k)
      end
      -- malloc's bytes in use and the resident set (after malloc_trim;
      -- glibc keeps freed pages otherwise) back within 10 %
      within("heap", start, after, 10, 64)
      within("rss_trim", start, after, 10)
      if ALL_AT_ONCE > 0 then
        -- all N alive at once: the loop keeps its grown queues (about
        -- 25 bytes per task of the peak), so round 2 is compared with
        -- round 1, and nothing more is held after round 2 than after 1
        local r1, r2
        for _, l in ipairs(lines) do
          if l:find("^all_at_once ") then
            if field(l, "round") == 1 then r1 = l else r2 = l end
          end
        end
        within("heap", r1, r2, 10, 64)
        within("rss_trim", r1, r2, 10)
        assert.are.equal(field(start, "fds"), field(r2, "fds"))
      end
    end,
  },
  {
    name = "http",
    run = function()
      local srv <close> = nginx.start()
      local lines, code, text = S.child("spec/support/stress/http_load.lua",
        { srv:url("/pause"), FETCHES, 2, 2 }, { nofile = 20000, timeout = 300 })
      assert.are.equal(0, code, text)
      assert.are.equal("ok", lines[#lines])
      local start = find(lines, "start ")
      local closed = {}
      for _, l in ipairs(lines) do
        if l:find("^round ") then
          -- all N in flight at once, each answered
          assert.are.equal(FETCHES, field(l, "peak_fetching"), l)
          assert.is_true(field(l, "peak_fds") >= field(start, "fds") + FETCHES, l)
        elseif l:find("^closed ") then
          closed[#closed + 1] = l
        end
      end
      assert.are.equal(2, #closed)
      assert.are.equal(FETCHES, field(find(lines, "round "), "peak_active"))
      for _, l in ipairs(closed) do
        for _, k in ipairs({ "tasks", "handles", "resources", "fds" }) do
          assert.are.equal(field(start, k), field(l, k), k .. ": " .. l)
        end
      end
      -- the second Session's cycle holds no more than the first one's
      within("heap", closed[1], closed[2], 10, 64)
      within("rss_trim", closed[1], closed[2], 10)
    end,
  },
  {
    name = "tcp",
    run = function()
      local lines, code, text = S.child("spec/support/stress/tcp_load.lua",
        { CONNECTIONS, 20 }, { nofile = 20000, timeout = 300 })
      assert.are.equal(0, code, text)
      assert.are.equal("ok", lines[#lines])
      local start, after = find(lines, "start "), find(lines, "round ")
      assert.are.equal(CONNECTIONS, field(after, "peak_open"))
      for _, k in ipairs({ "tasks", "fds" }) do
        assert.are.equal(field(start, k), field(after, k), k)
      end
    end,
  },
}

describe("#stress load", function()
  for _, case in ipairs(CASES) do
    it(case.name, case.run)
  end
end)
