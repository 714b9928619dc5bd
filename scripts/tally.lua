-- Counts busted's results for the Makefile's closing line (plain Lua 5.4):
--
--   { busted ... || echo "tally: exit $?"; } | lua5.4 scripts/tally.lua add FILE
--       passes the output through and adds its passed and failed tests
--   lua5.4 scripts/tally.lua fail FILE WHY    adds one failure
--   lua5.4 scripts/tally.lua total FILE       prints "N passed, M failed";
--       exits 1 when something failed
--
-- It reads busted's gtest output (the .busted default): "[       OK ]"
-- lines pass; "[  FAILED  ]" and "[  ERROR   ]" lines that end a test
-- (they carry its time) fail. A run that stops inside a test (a crash, a
-- sanitizer abort) counts that test as failed; one that stops elsewhere
-- before its "[==========] ... ran." line, or exits non-zero ("tally:
-- exit N") with no failed test, counts one failure.
local cmd, file = arg[1], arg[2]

local function usage()
  io.stderr:write("usage: tally.lua add|fail|total FILE [WHY]\n")
  os.exit(2)
end
if not file then usage() end

local function read_counts()
  local passed, failed, skipped = 0, 0, 0
  local f = io.open(file)
  if f then
    for line in f:lines() do
      local p, fl, s = line:match("^(%d+) (%d+) (%d+)")
      if p then
        passed, failed, skipped = passed + p, failed + fl, skipped + s
      end
    end
    f:close()
  end
  return passed, failed, skipped
end

local function append(passed, failed, skipped, note)
  local f = assert(io.open(file, "a"))
  f:write(("%d %d %d %s\n"):format(passed, failed, skipped, note or ""))
  f:close()
end

if cmd == "add" then
  local passed, failed, skipped = 0, 0, 0
  local running, finished, exit = false, false, nil
  for line in io.lines() do
    io.stdout:write(line, "\n")
    io.stdout:flush()
    line = line:gsub("\27%[[%d;]*m", "") -- colours, if any
    local tag = line:match("^%[([ %w=-]+)%]")
    local timed = line:find("%(%d+%.?%d* ms%)%s*$") ~= nil
    if tag == " RUN      " then
      running = true
    elseif tag == "       OK " then
      passed, running = passed + 1, false
    elseif (tag == "  FAILED  " or tag == "  ERROR   ") and timed then
      failed, running = failed + 1, false
    elseif tag == " SKIPPED  " and timed then
      skipped, running = skipped + 1, false
    elseif tag == "==========" and line:find(" ran%.") then
      finished = true
    elseif line:find("^tally: exit %d+") then
      exit = tonumber(line:match("%d+"))
    end
  end
  local note = ""
  if running then
    failed, note = failed + 1, "(the run stopped inside a test)"
  elseif not finished then
    failed, note = failed + 1, "(the run did not finish)"
  elseif exit and exit ~= 0 and failed == 0 then
    failed, note = failed + 1, "(busted exited with " .. exit .. ")"
  end
  append(passed, failed, skipped, note)
elseif cmd == "fail" then
  append(0, 1, 0, arg[3])
elseif cmd == "total" then
  local passed, failed, skipped = read_counts()
  if skipped > 0 then
    io.stdout:write(("(%d skipped: see the [ SKIPPED  ] lines above)\n"):format(skipped))
  end
  io.stdout:write(("%d passed, %d failed\n"):format(passed, failed))
  if failed > 0 then os.exit(1) end
else
  usage()
end
