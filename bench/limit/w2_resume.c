/* W2 limit from C: T Lua threads, each yielding K times, resumed round
 * robin with lua_resume from C (no scheduler, no Lua-side loop).
 * Build: cc -O2 -o w2_resume w2_resume.c $(pkg-config --cflags --libs lua5.4)
 * Usage: w2_resume [T] [K]      Prints: RESULT switches_per_s=... */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  int T = argc > 1 ? atoi(argv[1]) : 1000;
  int K = argc > 2 ? atoi(argv[2]) : 1000;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lua_settop(L, 0);
  if (luaL_loadstring(L, "local K = ...; local y = coroutine.yield\n"
                         "return function() for _ = 1, K do y() end end") !=
      LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    return 1;
  }
  lua_pushinteger(L, K);
  lua_call(L, 1, 1); /* body function at index 1 */

  double t0 = now();
  lua_State **th = malloc(sizeof *th * (size_t)T);
  lua_createtable(L, T, 0); /* anchors the threads, index 2 */
  for (int i = 0; i < T; i++) {
    th[i] = lua_newthread(L);
    lua_rawseti(L, 2, i + 1);
    lua_pushvalue(L, 1);
    lua_xmove(L, th[i], 1);
    int nres;
    lua_resume(th[i], L, 0, &nres); /* run to the first yield */
    lua_pop(th[i], nres);
  }
  int live = T;
  while (live > 0) {
    live = 0;
    for (int i = 0; i < T; i++) {
      if (!th[i])
        continue;
      int nres;
      int st = lua_resume(th[i], L, 0, &nres);
      if (st == LUA_YIELD) {
        lua_pop(th[i], nres);
        live++;
      } else {
        if (st != LUA_OK) {
          fprintf(stderr, "%s\n", lua_tostring(th[i], -1));
          return 1;
        }
        th[i] = NULL;
      }
    }
  }
  double elapsed = now() - t0;
  double switches = (double)T * K;
  printf("RESULT switches_per_s=%.6g elapsed_s=%.6g switches=%.0f\n",
         switches / elapsed, elapsed, switches);
  free(th);
  lua_close(L);
  return 0;
}
