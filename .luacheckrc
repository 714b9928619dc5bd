-- luacheck configuration (run by `make lint`).
std = "lua54"
max_line_length = 100
codes = true

-- bench/ holds peers in other languages and their results; luacheck only
-- reads .lua files (and bin/lunio, named on the command line).
exclude_files = {
  "bench/results/**",
  "build*/**",
  "lua_modules/**",
}

files["spec/**/*.lua"] = { std = "+busted" }
files["spec/*.lua"] = { std = "+busted" }
