-- Reliability gate (issue 14), soak: spec/support/stress/soak.lua runs a
-- mixed workload (spawn bursts, sleepers, a queue, locks, timeouts, HTTP,
-- fs, to_thread; streams and subprocesses once they exist) in one process
-- for SOAK_SECONDS (CI: 60; STRESS_FULL=1: 600), sampling RSS, malloc's
-- bytes in use (after a full collection), descriptors, libuv handles and
-- tasks every second. After the warm-up (the first 20 %, at least 5 s):
-- RSS stays within 10 % (max <= 1.1 x min); the live heap, descriptors and
-- handles, which move with the work in flight, do not grow from the first
-- half of the samples to the second (medians within 10 %, or 2 for the
-- small counts); afterwards everything is back to the start exactly.
-- Tagged #stress.
local S = require "support.stress"
local nginx = require "support.nginx"

local SECONDS = S.size("SOAK_SECONDS", 60, 600)

local function median(list)
  table.sort(list)
  return list[(#list + 1) // 2]
end

describe("#stress soak", function()
  it(("a mixed workload for %d s stays flat"):format(SECONDS), function()
    local srv <close> = nginx.start()
    local lines, code, text = S.child("spec/support/stress/soak.lua",
      { SECONDS, (srv:url("/"):gsub("/$", "")) }, { timeout = SECONDS + 300 })
    assert.are.equal(0, code, text:sub(-3000))
    assert.are.equal("ok", lines[#lines])
    local start, summary, finish = S.find(lines, "start "), S.find(lines, "summary "),
      S.find(lines, "end ")
    local warmup = S.field(summary, "warmup")
    local after = {}
    for _, l in ipairs(lines) do
      if l:find("^sample ") and S.field(l, "t") > warmup then after[#after + 1] = l end
    end
    assert.is_true(#after >= SECONDS - warmup - 2, "samples: " .. #after)
    assert.is_true(S.field(summary, "ops") > SECONDS * 100, summary) -- it worked
    -- RSS: flat within 10 %
    assert.is_true(S.field(summary, "rss_max") <= 1.10 * S.field(summary, "rss_min"), summary)
    -- no growth from the first half of the samples to the second
    local half = #after // 2
    local function pick(k, from, to)
      local out = {}
      for i = from, to do out[#out + 1] = S.field(after[i], k) end
      return out
    end
    local h1, h2 = median(pick("heap", 1, half)), median(pick("heap", half + 1, #after))
    assert.is_true(h2 <= h1 * 1.10 + 64, ("heap median %d -> %d KiB"):format(h1, h2))
    for _, k in ipairs({ "fds", "handles" }) do
      local m1, m2 = median(pick(k, 1, half)), median(pick(k, half + 1, #after))
      assert.is_true(m2 <= math.max(m1 * 1.10, m1 + 2), ("%s median %d -> %d"):format(k, m1, m2))
    end
    -- afterwards, as at the start
    for _, k in ipairs({ "tasks", "handles", "resources", "fds" }) do
      assert.are.equal(S.field(start, k), S.field(finish, k), k)
    end
  end)
end)
