-- Runs examples/pipeline.lua and examples/rate_limited.lua with lua5.4 (the
-- one first in PATH, so `make check-asan` runs them sanitized too) and
-- checks what they print.
local build = os.getenv("LUNIO_BUILD_DIR") or "build"

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs an example; returns its stdout, and its exit code.
local function run(script, args)
  local cmd = ("LUA_PATH=%s LUA_CPATH=%s lua5.4 %s %s 2>&1"):format(
    q("lua/?.lua;lua/?/init.lua;;"), q(build .. "/?.so;;"), q(script), args or "")
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

describe("examples/pipeline.lua", function()
  it("pushes every item through the bounded queues", function()
    local out, code = run("examples/pipeline.lua")
    assert.equal(0, code, out)
    assert.same({
      "items: 20, workers: 3, queue maxsize: 4",
      "collected 20 squares, sum 2870",
      "peak queue size 4 (bounded by 4)",
    }, lines(out))
  end)

  it("works with many items, many workers and a tiny queue", function()
    local out, code = run("examples/pipeline.lua", "-n 2000 -w 16 -q 1")
    assert.equal(0, code, out)
    assert.matches("collected 2000 squares, sum 2668667000", out, 1, true)
    assert.matches("peak queue size 1 (bounded by 1)", out, 1, true)
  end)

  it("reports a failing worker as a task_group error", function()
    local out, code = run("examples/pipeline.lua", "--fail-at 7")
    assert.equal(1, code, out)
    local l = lines(out)
    assert.equal("pipeline failed: 1 error(s)", l[1])
    assert.matches("^  bad_item: worker %d+ cannot square 7$", l[2])
    assert.equal(2, #l)
  end)
end)

describe("examples/rate_limited.lua", function()
  it("runs the jobs with the limit and per-job deadlines", function()
    local out, code = run("examples/rate_limited.lua")
    assert.equal(0, code, out)
    local l = lines(out)
    assert.equal(13, #l)
    for i = 1, 12 do
      local expect = i % 4 == 3 and "timed out" or ("ok result-" .. i)
      assert.equal(("job %2d: %s"):format(i, expect), l[i])
    end
    assert.equal("9 ok, 3 timed out, 0 cancelled; at most 3 at a time (limit 3)", l[13])
  end)

  it("stops everything at the overall deadline", function()
    local out, code = run("examples/rate_limited.lua", "-n 40 -c 2 -T 0.15")
    assert.equal(0, code, out)
    local l = lines(out)
    assert.equal(41, #l)
    local ok, timed_out, cancelled, peak =
      l[41]:match("^(%d+) ok, (%d+) timed out, (%d+) cancelled; at most (%d+) at a time "
        .. "%(limit 2%); overall deadline reached$")
    assert.is_not_nil(ok, l[41])
    assert.equal(40, tonumber(ok) + tonumber(timed_out) + tonumber(cancelled))
    assert.is_true(tonumber(cancelled) > 0)
    assert.equal("2", peak)
    assert.equal("job 40: cancelled (overall deadline)", l[40])
  end)
end)
