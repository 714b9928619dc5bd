/*
 * host.c - a minimal application embedding Lua 5.4, for specs that check
 * what lunio may and may not change in its host's process:
 *
 *   host MODE script.lua
 *
 * MODE sets SIGINT before the script runs: "default" (SIG_DFL), "ignore"
 * (SIG_IGN) or "custom" (a handler of the host's that counts). The host
 * also writes a sentinel into the main thread's LUA_EXTRASPACE, which the
 * Lua manual reserves for the application. After the script it prints
 *   extraspace <ok|clobbered>
 *   handler <count>        (custom mode)
 *   sigint <default|ignore|custom|other>   (the disposition left behind)
 * and exits 0, or prints the script's error and exits 1.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

static volatile sig_atomic_t handled;

static void host_handler(int sig) {
  (void)sig;
  handled++;
}

static const char *disposition(void) {
  struct sigaction sa;
  sigaction(SIGINT, NULL, &sa);
  if (sa.sa_handler == SIG_DFL)
    return "default";
  if (sa.sa_handler == SIG_IGN)
    return "ignore";
  if (sa.sa_handler == host_handler)
    return "custom";
  return "other";
}

int main(int argc, char **argv) {
  static const char sentinel[] = "HOSTDATA";
  struct sigaction sa;
  lua_State *L;
  int rc;
  if (argc != 3) {
    fprintf(stderr, "usage: host default|ignore|custom script.lua\n");
    return 2;
  }
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = strcmp(argv[1], "ignore") == 0   ? SIG_IGN
                  : strcmp(argv[1], "custom") == 0 ? host_handler
                                                   : SIG_DFL;
  sigaction(SIGINT, &sa, NULL);
  L = luaL_newstate();
  luaL_openlibs(L);
  memcpy(lua_getextraspace(L), sentinel, sizeof(void *));
  rc = luaL_dofile(L, argv[2]);
  if (rc != LUA_OK) {
    fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return 1;
  }
  printf("extraspace %s\n",
         memcmp(lua_getextraspace(L), sentinel, sizeof(void *)) == 0
             ? "ok"
             : "clobbered");
  if (strcmp(argv[1], "custom") == 0)
    printf("handler %d\n", (int)handled);
  printf("sigint %s\n", disposition());
  lua_close(L);
  return 0;
}
