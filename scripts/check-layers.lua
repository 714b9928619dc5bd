-- Checks that the C files of lunio.core call each other without cycles
-- (src/internal.h draws the layers: modules over the I/O core over the Lua
-- types over the scheduler). Reads the symbols of a build's object files:
--   lua5.4 scripts/check-layers.lua [build-dir]
-- Prints the dependency graph and exits 1 on a cycle.
local build = arg[1] or "build"
local dir = build .. "/CMakeFiles/lunio_core.dir/src"

local function lines(cmd)
  local p = assert(io.popen(cmd))
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  return out
end

local files, defined, used = {}, {}, {}
for _, c in ipairs(lines("ls src/*.c")) do
  local name = c:match("src/(.-)%.c$")
  local obj = dir .. "/" .. name .. ".c.o"
  local f = io.open(obj)
  if not f then
    io.stderr:write("check-layers: ", obj, " missing; run make build first\n")
    os.exit(1)
  end
  f:close()
  files[#files + 1] = name
  used[name] = {}
  for _, l in ipairs(lines("nm " .. obj)) do
    local kind, sym = l:match("^%x*%s+(%a)%s+(%S+)$")
    if sym and sym:find("^lunio__") then
      if kind == "T" or kind == "D" or kind == "B" then
        defined[sym] = name
      elseif kind == "U" then
        used[name][sym] = true
      end
    end
  end
end

local edges = {}
for _, f in ipairs(files) do
  edges[f] = {}
  for sym in pairs(used[f]) do
    local to = defined[sym]
    if to and to ~= f then edges[f][to] = true end
  end
end

local state, cycle = {}, nil
local function visit(f, path)
  state[f] = "open"
  path[#path + 1] = f
  for to in pairs(edges[f]) do
    if state[to] == "open" and not cycle then
      local from
      for i, p in ipairs(path) do if p == to then from = i end end
      cycle = table.concat(path, " -> ", from) .. " -> " .. to
    elseif not state[to] then
      visit(to, path)
    end
  end
  path[#path] = nil
  state[f] = "done"
end
table.sort(files)
for _, f in ipairs(files) do
  if not state[f] then visit(f, {}) end
  local deps = {}
  for to in pairs(edges[f]) do deps[#deps + 1] = to end
  table.sort(deps)
  print(("%-10s -> %s"):format(f, table.concat(deps, " ")))
end
if cycle then
  io.stderr:write("check-layers: src/ files call each other in a circle: ", cycle, "\n")
  os.exit(1)
end
print("check-layers: no cycles")
