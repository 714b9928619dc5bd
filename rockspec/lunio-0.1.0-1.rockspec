-- luarocks build of lunio 0.1.0, from the tag v0.1.0:
--   luarocks --lua-version=5.4 pack rockspec/lunio-0.1.0-1.rockspec
--   luarocks --lua-version=5.4 install lunio-0.1.0-1.src.rock
-- The same build as lunio-scm-1.rockspec: the two may differ only in version
-- and source, and scripts/check-rock.sh (make test) fails otherwise, so edit
-- both together.
rockspec_format = "3.0"
package = "lunio"
version = "0.1.0-1"

-- `luarocks make` builds from the current directory and ignores this URL;
-- `luarocks pack` and `luarocks install` fetch the tag.
source = {
  url = "git+https://github.com/lunio-lua/lunio.git",
  tag = "v0.1.0",
}

description = {
  summary = "asyncio for Lua 5.4 on libuv and libcurl",
  detailed = [[
lunio brings asyncio-style tasks, timers, combinators, task groups,
synchronisation primitives and an HTTP client to Lua 5.4. Its C core
runs the scheduler on libuv; HTTP goes through libcurl's multi interface.
]],
  license = "MIT",
  labels = { "async", "asyncio", "libuv", "coroutines", "http" },
}

dependencies = {
  "lua >= 5.4",
}

-- LuaRocks looks for a header only in PREFIX/include, but Debian and Ubuntu
-- keep curl/curl.h in the multiarch directory (/usr/include/x86_64-linux-gnu),
-- which gcc searches by itself. So LIBCURL is found by its library alone;
-- LIBUV keeps its header test (uv.h is in PREFIX/include everywhere) so that
-- a missing libuv1-dev is reported by LuaRocks rather than by the compiler.
external_dependencies = {
  LIBUV = { header = "uv.h", library = "uv" },
  LIBCURL = { library = "curl" },
}

build = {
  type = "builtin",
  modules = {
    ["lunio.core"] = {
      sources = {
        "src/buf.c", "src/clock.c", "src/core.c", "src/coro.c", "src/dns.c",
        "src/errors.c", "src/fs.c", "src/http.c", "src/http_multi.c",
        "src/join.c", "src/loop.c", "src/process.c", "src/req.c",
        "src/resource.c", "src/sched.c", "src/signal.c", "src/stream.c",
        "src/task.c", "src/thread.c",
      },
      defines = { "_GNU_SOURCE" },
      incdirs = { "$(LIBUV_INCDIR)", "$(LIBCURL_INCDIR)" },
      libdirs = { "$(LIBUV_LIBDIR)", "$(LIBCURL_LIBDIR)" },
      libraries = { "uv", "curl" },
    },
    lunio = "lua/lunio/init.lua",
    ["lunio.testing"] = "lua/lunio/testing.lua",
    ["lunio.sync"] = "lua/lunio/sync.lua",
    ["lunio.combinators"] = "lua/lunio/combinators.lua",
    ["lunio.http"] = "lua/lunio/http.lua",
    ["lunio.stream"] = "lua/lunio/stream.lua",
    ["lunio.cli"] = "lua/lunio/cli.lua",
    ["lunio.util"] = "lua/lunio/util.lua",
    ["lunio.fs"] = "lua/lunio/fs.lua",
    ["lunio.signal"] = "lua/lunio/signal.lua",
    ["lunio.subprocess"] = "lua/lunio/subprocess.lua",
  },
  install = {
    bin = { lunio = "bin/lunio" },
  },
  -- docs/ and types/ (LuaLS definitions of lunio.core) go into the rock.
  copy_directories = { "docs", "types" },
}
