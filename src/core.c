/*
 * core.c - luaopen_lunio_core: assembles the `lunio.core` module.
 *
 * lunio.core is the C half of lunio: loops, tasks, futures, timers, error
 * objects and the HTTP engine. The public API is lua/lunio/init.lua, which
 * wraps these primitives; nothing here is meant to be called by users
 * directly, and its names may change between versions.
 */
#include <dirent.h>

#include <curl/curl.h>

#include "internal.h"

/* open_fds() -> number of open file descriptors of this process, or nil
 * where /proc is missing. Used by lunio.testing to find leaks. */
static int core_open_fds(lua_State *L) {
  DIR *dir = opendir("/proc/self/fd");
  struct dirent *entry;
  int n = 0;
  if (dir == NULL)
    return 0;
  while ((entry = readdir(dir)) != NULL)
    if (entry->d_name[0] != '.')
      n++;
  closedir(dir);
  lua_pushinteger(L, n - 1); /* minus the directory's own descriptor */
  return 1;
}

LUNIO_API int luaopen_lunio_core(lua_State *L) {
  luaL_checkversion(L);
  /* Lua leaves the main thread's extra space uninitialised and every new
   * coroutine copies it: zero it so coroutines created from now on start
   * with no task (lunio__task_of still guards older ones). */
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  LUNIO_TASK_OF(lua_tothread(L, -1)) = NULL;
  lua_pop(L, 1);
  lua_newtable(L);
  luaopen_lunio_errors(L);
  luaopen_lunio_loop(L);
  luaopen_lunio_task(L);
  lunio__open_coroutine(L);
  lua_setfield(L, -2, "coroutine");
  lunio__open_http(L);
  lua_setfield(L, -2, "http");
  lua_pushcfunction(L, core_open_fds);
  lua_setfield(L, -2, "open_fds");
  lua_pushliteral(L, LUNIO_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushstring(L, uv_version_string());
  lua_setfield(L, -2, "libuv_version");
  lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
  lua_setfield(L, -2, "libcurl_version");
  return 1;
}
