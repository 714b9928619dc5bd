-- Checks rockspec/*.rockspec against the files they must install:
--   * lunio.core's C sources are exactly src/*.c (CMake globs src/*.c, so a
--     new C file builds there and would be missing only from the rock);
--   * every Lua module under lua/ is installed under its module name, and
--     every module the rockspec names exists;
--   * all rockspecs agree on everything but `version` and `source`, so the
--     release rockspec cannot drift from the scm one.
-- Run from the repository root by scripts/check-rock.sh:
--   lua5.4 scripts/check-rockspec.lua rockspec/a.rockspec rockspec/b.rockspec
local problems = {}
local function problem(fmt, ...) problems[#problems + 1] = fmt:format(...) end

local function lines_of(cmd)
  local p = assert(io.popen(cmd))
  local out = {}
  for line in p:lines() do out[#out + 1] = line end
  assert(p:close(), "command failed: " .. cmd)
  table.sort(out)
  return out
end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

-- "wanted" minus "have", sorted, for the messages.
local function missing(wanted, have)
  local out = {}
  for _, v in ipairs(wanted) do
    if not have[v] then out[#out + 1] = v end
  end
  return out
end

local function load_rockspec(path)
  local env = {}
  local chunk, err = loadfile(path, "t", env)
  if not chunk then error(err, 0) end
  chunk()
  return env
end

-- Lua module name of a file under lua/: lua/lunio/init.lua -> lunio,
-- lua/lunio/http.lua -> lunio.http.
local function module_name(file)
  return (file:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", "")
    :gsub("/", "."))
end

local c_files = lines_of("find src -maxdepth 1 -name '*.c' | LC_ALL=C sort")
local lua_files = lines_of("find lua -name '*.lua' | LC_ALL=C sort")

local function check_one(path, spec)
  local modules = spec.build and spec.build.modules or {}
  local core = modules["lunio.core"]
  local sources = type(core) == "table" and core.sources or {}
  local listed = set_of(sources)
  local present = set_of(c_files)
  local gone = missing(c_files, listed)
  if #gone > 0 then
    problem("%s: lunio.core sources lack %s (present in src/)", path,
      table.concat(gone, ", "))
  end
  local extra = missing(sources, present)
  if #extra > 0 then
    problem("%s: lunio.core sources list %s (not in src/)", path,
      table.concat(extra, ", "))
  end

  local installed = {}
  for name, file in pairs(modules) do
    if type(file) == "string" then
      installed[file] = name
      if not io.open(file, "r") then
        problem("%s: module %s names %s, which does not exist", path, name,
          file)
      elseif file:match("^lua/") and module_name(file) ~= name then
        problem("%s: %s is installed as %s, want %s", path, file, name,
          module_name(file))
      end
    end
  end
  for _, file in ipairs(lua_files) do
    if not installed[file] then
      problem('%s: %s is not installed; add ["%s"] = "%s" to build.modules',
        path, file, module_name(file), file)
    end
  end
end

-- Deep comparison for the drift check; returns a path to the first difference.
local function differ(a, b, where)
  if type(a) ~= "table" or type(b) ~= "table" then
    if a ~= b then return where end
    return nil
  end
  for k, v in pairs(a) do
    local d = differ(v, b[k], where .. "." .. tostring(k))
    if d then return d end
  end
  for k in pairs(b) do
    if a[k] == nil then return where .. "." .. tostring(k) end
  end
  return nil
end

local specs = {}
for i, path in ipairs(arg) do
  local ok, spec = pcall(load_rockspec, path)
  if not ok then
    problem("%s: cannot load: %s", path, spec)
  else
    specs[i] = spec
    check_one(path, spec)
    if i > 1 and specs[1] then
      local a, b = {}, {}
      for k, v in pairs(specs[1]) do a[k] = v end
      for k, v in pairs(spec) do b[k] = v end
      a.version, a.source, b.version, b.source = nil, nil, nil, nil
      local d = differ(a, b, "")
      if d then
        problem("%s and %s differ at %s (only version and source may)",
          arg[1], path, d:sub(2))
      end
    end
  end
end

if #problems > 0 then
  for _, p in ipairs(problems) do io.stderr:write("check-rock: ", p, "\n") end
  os.exit(1)
end
