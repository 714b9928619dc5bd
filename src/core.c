/*
 * core.c - luaopen_lunio_core: assembles the `lunio.core` module.
 *
 * lunio.core is the C half of lunio: loops, tasks, futures, timers, error
 * objects and the HTTP engine. The public API is lua/lunio/init.lua, which
 * wraps these primitives; nothing here is meant to be called by users
 * directly, and its names may change between versions.
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

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

/*
 * Lua's collector frees garbage in bursts; glibc then returns the free top
 * of the heap to the kernel (beyond 128 KiB) and the next allocations fault
 * the same pages in again. Under a busy loop that churn cost a third of the
 * HTTP client's throughput (27,000 page faults for 20,000 requests, against
 * 1,400 with this setting). Keeping 16 MiB of slack at the top of the heap
 * stops it. It is process-wide, so it is documented (docs/reference.md) and
 * LUNIO_MALLOC_TUNING=0 turns it off. The call is idempotent.
 */
static void tune_malloc(void) {
#if defined(__GLIBC__) && defined(M_TOP_PAD)
  const char *opt = getenv("LUNIO_MALLOC_TUNING");
  if (opt != NULL && strcmp(opt, "0") == 0)
    return;
  mallopt(M_TOP_PAD, 16 << 20);
  /* Setting M_TOP_PAD freezes glibc's mmap threshold at 128 KiB; 1 MiB
   * keeps mid-sized blocks in the padded heap and still maps big ones
   * (large arrays then grow by mremap, without copying). W1 went from a
   * bimodal 1.9/2.9 M tasks/s to a steady 2.7-3.0 M with it. */
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
}

LUNIO_API int luaopen_lunio_core(lua_State *L) {
  luaL_checkversion(L);
  tune_malloc();
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
