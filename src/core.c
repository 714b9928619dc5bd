/*
 * core.c - luaopen_lunio_core: assembles the `lunio.core` module.
 *
 * lunio.core is the C half of lunio: loops, tasks, futures, timers, error
 * objects, name resolution, streams and the HTTP engine. The public API is
 * lua/lunio/init.lua, which wraps these primitives; nothing here is meant to be
 * called by users directly, and its names may change between versions.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <curl/curl.h>

#include "internal.h"

/* open_fds() -> number of open file descriptors of this process, or nil
 * where /proc is missing. Used by lunio.testing to find leaks. Listing
 * /proc/self/fd takes a descriptor itself: when none is left (EMFILE),
 * every possible descriptor is probed with fcntl instead. */
static int core_open_fds(lua_State *L) {
  DIR *dir = opendir("/proc/self/fd");
  struct dirent *entry;
  int n = 0;
  if (dir == NULL && (errno == EMFILE || errno == ENFILE)) {
    struct rlimit rl;
    rlim_t fd, max = 1 << 20;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < max)
      max = rl.rlim_cur;
    for (fd = 0; fd < max; fd++)
      if (fcntl((int)fd, F_GETFD) != -1)
        n++;
    lua_pushinteger(L, n);
    return 1;
  }
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
 * tune_allocator() -> true when glibc's malloc was tuned, false elsewhere.
 *
 * Lua's collector frees garbage in bursts; glibc then returns the free top
 * of the heap to the kernel (beyond 128 KiB) and the next allocations fault
 * the same pages in again. Keeping 16 MiB of slack at the top of the heap
 * stops that churn, and a 1 MiB mmap threshold keeps mid-sized blocks in
 * the padded heap. Both are process-wide, so lunio never does this when it
 * is loaded: a program that owns its process opts in (the lunio command
 * does). See docs/reference.md and bench/README.md for what it buys.
 */
static int core_tune_allocator(lua_State *L) {
#if defined(__GLIBC__) && defined(M_TOP_PAD)
  lua_pushboolean(L, mallopt(M_TOP_PAD, 16 << 20) == 1 &&
                         mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1);
#else
  lua_pushboolean(L, 0);
#endif
  return 1;
}

/*
 * heap_info() -> {in_use=, free=, mapped=} in bytes, from glibc's
 * mallinfo2(), or nil elsewhere. heap_trim() -> whether malloc_trim(0)
 * gave pages back to the kernel.
 *
 * For the reliability specs (spec/stress_*): glibc keeps freed memory in
 * its free lists, so RSS after a burst stays near the peak although
 * nothing leaked. The bytes malloc counts in use show a leak exactly, and
 * RSS after a trim shows what the process really holds.
 */
static int core_heap_info(lua_State *L) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
  struct mallinfo2 m = mallinfo2();
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)(m.uordblks + m.hblkhd));
  lua_setfield(L, -2, "in_use");
  lua_pushinteger(L, (lua_Integer)m.fordblks);
  lua_setfield(L, -2, "free");
  lua_pushinteger(L, (lua_Integer)m.hblkhd);
  lua_setfield(L, -2, "mapped");
  return 1;
#else
  lua_pushnil(L);
  return 1;
#endif
}

static int core_heap_trim(lua_State *L) {
#if defined(__GLIBC__)
  lua_pushboolean(L, malloc_trim(0));
#else
  lua_pushboolean(L, 0);
#endif
  return 1;
}

/* isatty(fd) -> whether the descriptor is a terminal (the lunio command
 * starts its REPL on one). */
static int core_isatty(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, 1, "not a file descriptor");
  lua_pushboolean(L, uv_guess_handle((uv_file)fd) == UV_TTY);
  return 1;
}

LUNIO_API int luaopen_lunio_core(lua_State *L) {
  luaL_checkversion(L);
  lunio__open_sched(L);
  lua_newtable(L);
  luaopen_lunio_errors(L);
  luaopen_lunio_loop(L);
  luaopen_lunio_task(L);
  lunio__open_join(L);
  lunio__open_coroutine(L);
  lua_setfield(L, -2, "coroutine");
  lunio__open_http(L);
  lua_setfield(L, -2, "http");
  lunio__open_dns(L);
  lunio__open_fs(L);
  lua_setfield(L, -2, "fs");
  lunio__open_thread(L);
  lunio__open_signal(L);
  lua_setfield(L, -2, "signal");
  lunio__open_stream(L);
  lua_setfield(L, -2, "stream");
  lunio__open_process(L);
  lua_setfield(L, -2, "process");
  lua_pushcfunction(L, core_tune_allocator);
  lua_setfield(L, -2, "tune_allocator");
  lua_pushcfunction(L, core_isatty);
  lua_setfield(L, -2, "isatty");
  lua_pushcfunction(L, core_open_fds);
  lua_setfield(L, -2, "open_fds");
  lua_pushcfunction(L, core_heap_info);
  lua_setfield(L, -2, "heap_info");
  lua_pushcfunction(L, core_heap_trim);
  lua_setfield(L, -2, "heap_trim");
  lua_pushliteral(L, LUNIO_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushstring(L, uv_version_string());
  lua_setfield(L, -2, "libuv_version");
  lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
  lua_setfield(L, -2, "libcurl_version");
  return 1;
}
