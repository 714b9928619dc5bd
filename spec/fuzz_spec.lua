-- Reliability gate (issue 14), fuzzing. `make check-stress` runs this spec
-- under ASan+UBSan (tag #sanitize): a crash, a hang or a sanitizer report
-- fails it. Two children, each printing its figures:
--
-- * spec/support/stress/fuzz_api.lua: FUZZ_ITERATIONS calls (CI: 100,000,
--   about two minutes under ASan; STRESS_FULL=1: 500,000) of every public
--   function and method reachable from `require "lunio"`, found by walking
--   the live tables, with random and hostile arguments; every call must
--   return or raise a clear Lua error, and end (cancelled after a deadline
--   when it waits).
-- * spec/support/stress/fuzz_parsers.lua: FUZZ_CASES random response heads
--   (CI: 2,000; full: 10,000) from a real socket (bad_server.py "raw"),
--   and, once lunio.open_connection exists, line reading with limits.
--
-- FUZZ_SEED overrides the seed (printed). When a child dies, the call or
-- input in flight is printed from its trace file.
local S = require "support.stress"
local nginx = require "support.nginx"
local bad_server = require "support.bad_server"

local SEED = S.seed("FUZZ_SEED", 2024)
local ITERATIONS = S.size("FUZZ_ITERATIONS", 100000, 500000)
local CASES = S.size("FUZZ_CASES", 2000, 10000)

local h = require "helper"
local read, cwd = h.read_all, h.getcwd

-- Runs a fuzzer child in a directory of its own (relative paths the
-- fuzzer makes up land there); on failure, shows what it was doing.
local function run(script, args, trace)
  local dir = h.mktemp("lunio-fuzz", "-d")
  local lines, code, text = S.child(cwd() .. "/" .. script, args, { timeout = 1800, cwd = dir })
  os.execute("rm -rf " .. S.shell_quote(dir))
  if code ~= 0 then
    error(("%s exited with %d; in flight: %s\n%s"):format(script, code,
      read(trace):gsub("%s+$", ""), text:sub(-3000)), 0)
  end
  assert.are.equal("ok", lines[#lines])
  return lines
end

describe("#stress #sanitize fuzz", function()
  it(("the API: %d calls (seed %d)"):format(ITERATIONS, SEED), function()
    local srv <close> = nginx.start()
    local trace = os.tmpname()
    local lines = run("spec/support/stress/fuzz_api.lua",
      { ITERATIONS, SEED, (srv:url("/"):gsub("/$", "")), trace }, trace)
    os.remove(trace)
    local head = lines[1]:find("^seed=") and lines[1] or S.find(lines, "seed=")
    assert.is_true(S.field(head, "targets") >= 150, head) -- the walk found the API
    local summary = S.find(lines, "summary ")
    assert.are.equal(ITERATIONS, S.field(summary, "calls"))
    assert.are.equal(0, S.field(summary, "defect"), summary)
    assert.are.equal(0, S.field(summary, "hangs"), summary)
    -- every class of outcome occurred: the fuzzer reached deep enough
    for _, k in ipairs({ "ok", "badarg", "lunio", "parked", "wrong_self" }) do
      assert.is_true(S.field(summary, k) > 0, k .. ": " .. summary)
    end
  end)

  it(("the parsers: %d responses (seed %d)"):format(CASES, SEED), function()
    local raw <close> = bad_server.start("raw")
    local trace = os.tmpname()
    local lines = run("spec/support/stress/fuzz_parsers.lua",
      { CASES, SEED, raw:url("/fuzz"), trace }, trace)
    os.remove(trace)
    os.remove(trace .. ".input")
    local counts = S.find(lines, "http_headers ")
    assert.are.equal(CASES, S.field(counts, "responses") + S.field(counts, "errors"))
    assert.is_true(S.field(counts, "responses") > CASES // 10, counts)
    assert.is_true(S.field(counts, "errors") > CASES // 10, counts)
  end)
end)
