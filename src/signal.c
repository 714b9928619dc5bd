/*
 * signal.c - lunio.signal: wait for POSIX signals, or run a handler task
 * per delivery; the SignalHandler type ("lunio.SignalHandler").
 *
 * Each loop has at most one watcher per signal (a sigwatch), made on first
 * use and kept until the loop closes. It is active, and registered as one
 * of the loop's resources, only while a task waits for the signal or a
 * handler is registered: then a libuv signal handle catches it; otherwise
 * the signal has its default action again (libuv resets it when the last
 * handle for it stops).
 *
 * A delivery wakes every waiting task (from the libuv callback: waking
 * touches no Lua state) and, for handlers, queues work with lunio__defer:
 * spawning a task per handler needs Lua, which never runs inside a libuv
 * callback. Several waiters and handlers all see each delivery.
 *
 * SIGINT is special. While run() holds SIGINT for this loop, lunio's own
 * handler turns it into cancelling the main task; a libuv handle would
 * replace that handler (and set SIGINT to SIG_DFL when it stops). So a
 * SIGINT watcher made while run() holds SIGINT, or before the loop runs
 * (when run() will take it), gets its deliveries from the scheduler's
 * sigint_observer hook instead: the main task is cancelled as documented,
 * and the waiters and handlers see SIGINT too. When run() does not hold
 * SIGINT (a host program's handler, loop:set_signals(false)), watching it
 * through libuv is the caller's explicit choice.
 *
 * Lifetime: a sigwatch is malloc'd (its uv handle must outlive any Lua
 * object) and freed in the handle's close callback at loop teardown.
 * Handlers are userdata anchored in a registry table keyed by their
 * watcher while registered, so `signal.on(name, fn)` keeps working when
 * its result is dropped; close() (or <close>, or the loop closing)
 * unregisters them.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define HANDLER_MT "lunio.SignalHandler"

static const struct {
  const char *name;
  int num;
} signal_names[] = {
    {"SIGHUP", SIGHUP},       {"SIGINT", SIGINT},   {"SIGQUIT", SIGQUIT},
    {"SIGILL", SIGILL},       {"SIGTRAP", SIGTRAP}, {"SIGABRT", SIGABRT},
    {"SIGBUS", SIGBUS},       {"SIGFPE", SIGFPE},   {"SIGKILL", SIGKILL},
    {"SIGUSR1", SIGUSR1},     {"SIGSEGV", SIGSEGV}, {"SIGUSR2", SIGUSR2},
    {"SIGPIPE", SIGPIPE},     {"SIGALRM", SIGALRM}, {"SIGTERM", SIGTERM},
    {"SIGCHLD", SIGCHLD},     {"SIGCONT", SIGCONT}, {"SIGSTOP", SIGSTOP},
    {"SIGTSTP", SIGTSTP},     {"SIGTTIN", SIGTTIN}, {"SIGTTOU", SIGTTOU},
    {"SIGURG", SIGURG},       {"SIGXCPU", SIGXCPU}, {"SIGXFSZ", SIGXFSZ},
    {"SIGVTALRM", SIGVTALRM}, {"SIGPROF", SIGPROF}, {"SIGWINCH", SIGWINCH},
#ifdef SIGIO
    {"SIGIO", SIGIO},
#endif
#ifdef SIGPWR
    {"SIGPWR", SIGPWR},
#endif
    {"SIGSYS", SIGSYS},
};

#define NSIGNALS (sizeof signal_names / sizeof signal_names[0])

typedef struct sigwatch {
  lunio_resource res; /* registered while active */
  lunio_deferred dispatch;
  uv_signal_t h;
  lunio_loop *loop;
  int slot; /* index in signal_names */
  lunio_tasklist waiters;
  int nhandlers;
  unsigned pending; /* deliveries the handlers have not seen yet */
  unsigned active : 1, observer : 1, closed : 1;
} sigwatch;

/* The module's per-loop state: one watcher per signal, made on use. */
typedef struct sig_loop {
  sigwatch *w[NSIGNALS];
} sig_loop;

typedef struct sighandler {
  sigwatch *w; /* NULL once closed */
} sighandler;

/* ---- names -------------------------------------------------------------- */

/* The slot in signal_names of the signal called name, or -1. */
static int signal_slot(const char *name) {
  int i;
  for (i = 0; i < (int)NSIGNALS; i++)
    if (strcmp(name, signal_names[i].name) == 0)
      return i;
  return -1;
}

/* The slot of the signal named at arg; raises a bad argument for unknown
 * names and for signals that cannot be watched. */
static int check_signal(lua_State *L, int arg) {
  const char *name = luaL_checkstring(L, arg);
  int i = signal_slot(name);
  if (i < 0)
    return luaL_argerror(
        L, arg,
        lua_pushfstring(L, "unknown signal '%s' (names look like 'SIGTERM')",
                        name));
  switch (signal_names[i].num) {
  case SIGKILL:
  case SIGSTOP:
    return luaL_argerror(L, arg,
                         lua_pushfstring(L, "%s cannot be caught", name));
  case SIGSEGV:
  case SIGBUS:
  case SIGFPE:
  case SIGILL:
    /* A handler that returns would run the faulting instruction again. */
    return luaL_argerror(
        L, arg,
        lua_pushfstring(L, "%s reports a fault and cannot be watched", name));
  default:
    return i;
  }
}

/* For process.c: the one table of names, both ways. */
int lunio__signal_number(const char *name) {
  int i = signal_slot(name);
  return i < 0 ? 0 : signal_names[i].num;
}

void lunio__push_signal_name(lua_State *L, int signum) {
  size_t i;
  for (i = 0; i < NSIGNALS; i++)
    if (signal_names[i].num == signum) {
      lua_pushstring(L, signal_names[i].name);
      return;
    }
#ifdef SIGRTMIN
  if (signum >= SIGRTMIN && signum <= SIGRTMAX) {
    lua_pushfstring(L, "SIGRTMIN+%d", signum - SIGRTMIN);
    return;
  }
#endif
  lua_pushfstring(L, "SIG%d", signum);
}

/* ---- watchers ----------------------------------------------------------- */

static void sig_ext_close(lunio_loop *loop, void *ext);

static const lunio_ext_ops sig_ext = {"signal", sizeof(sig_loop), sig_ext_close,
                                      NULL};

static void on_signal(uv_signal_t *h, int signum);
static void dispatch_handlers(lua_State *L, lunio_loop *loop,
                              lunio_deferred *d);
static void watch_close(lunio_resource *r);
static void on_sigint(lua_State *L, lunio_loop *loop, void *data);

static const lunio_resource_ops watch_resource = {"SignalWatcher", watch_close};

static void on_watch_closed(uv_handle_t *h) {
  sigwatch *w = h->data;
  lunio__tasklist_free(&w->waiters);
  free(w);
}

/* The watcher of slot on loop, made on first use; raises on failure. */
static sigwatch *get_watch(lua_State *L, lunio_loop *loop, int slot) {
  sig_loop *sl = loop->closing || loop->closed
                     ? NULL /* sig_ext_close ran, or will */
                     : lunio__loop_ext(loop, &sig_ext);
  sigwatch *w;
  int rc;
  if (sl == NULL) {
    if (loop->closing || loop->closed)
      lunio__error_raise(L, "closed", "the loop is closed");
    luaL_error(L, "not enough memory");
  }
  if (sl->w[slot] != NULL)
    return sl->w[slot];
  w = calloc(1, sizeof *w);
  if (w == NULL)
    luaL_error(L, "not enough memory");
  rc = uv_signal_init(lunio__uv(loop), &w->h);
  if (rc < 0) {
    free(w);
    lunio__uv_error_raise(L, rc, "cannot watch signals");
  }
  w->h.data = w;
  w->loop = loop;
  w->slot = slot;
  w->dispatch.fn = dispatch_handlers;
  sl->w[slot] = w;
  return w;
}

/* Starts catching the signal when the first waiter or handler comes;
 * stops when the last one goes (the signal gets its default action
 * back). Returns 0 or a libuv error. */
static int watch_update(sigwatch *w) {
  int want = (w->waiters.n + w->nhandlers) > 0 && !w->closed;
  int signum = signal_names[w->slot].num;
  if (want == (int)w->active)
    return 0;
  if (want) {
    lunio_loop *loop = w->loop;
    /* SIGINT goes through run()'s handler when run() holds it, or will
     * take it (the loop does not run yet and turns SIGINT into
     * cancellation). */
    w->observer = signum == SIGINT && (lunio__owns_sigint(loop) ||
                                       (!loop->running && loop->signals));
    if (w->observer) {
      loop->sigint_observer = on_sigint;
      loop->sigint_observer_data = w;
    } else {
      int rc = uv_signal_start(&w->h, on_signal, signum);
      if (rc < 0)
        return rc;
    }
    w->active = 1;
    lunio__resource_add(loop, &w->res, &watch_resource);
  } else {
    if (w->observer) {
      if (w->loop->sigint_observer_data == w) {
        w->loop->sigint_observer = NULL;
        w->loop->sigint_observer_data = NULL;
      }
    } else
      uv_signal_stop(&w->h);
    w->active = 0;
    w->observer = 0;
    lunio__resource_remove(&w->res);
  }
  return 0;
}

/* A delivery: every waiter wakes (and leaves the list); the handlers get
 * it from dispatch_handlers, in Lua context. Touches no Lua state. */
static void deliver(sigwatch *w) {
  lunio__tasklist_wake_all(lunio__loop_state(w->loop), &w->waiters);
  if (w->nhandlers > 0) {
    w->pending++;
    lunio__defer(w->loop, &w->dispatch);
  }
  watch_update(w); /* stopping cannot fail */
}

static void on_signal(uv_signal_t *h, int signum) {
  (void)signum;
  deliver(h->data);
}

/* run() received SIGINT (after it cancelled the main task). */
static void on_sigint(lua_State *L, lunio_loop *loop, void *data) {
  sigwatch *w = data;
  (void)loop;
  if (w->active && w->observer) {
    deliver(w);
    lunio__defer_cancel(w->loop, &w->dispatch);
    dispatch_handlers(L, w->loop, &w->dispatch); /* Lua context already */
  }
}

/* Pushes the table of w's handlers (an array, registration order). */
static void push_handlers(lua_State *L, sigwatch *w) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, w) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, w);
  }
}

/* In Lua context (between ticks): one new task per handler per delivery,
 * each running fn(name). */
static void dispatch_handlers(lua_State *L, lunio_loop *loop,
                              lunio_deferred *d) {
  sigwatch *w = container_of(d, sigwatch, dispatch);
  int top = lua_gettop(L), list, i, n;
  unsigned k, deliveries = w->pending;
  w->pending = 0;
  if (w->closed || deliveries == 0)
    return;
  luaL_checkstack(L, 4, NULL);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, w) != LUA_TTABLE) { /* all closed */
    lua_settop(L, top);
    return;
  }
  list = lua_gettop(L);
  n = (int)lua_rawlen(L, list);
  for (k = 0; k < deliveries; k++)
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, list, i);
      lua_getiuservalue(L, -1, 1);
      lua_remove(L, -2);
      lua_pushstring(L, signal_names[w->slot].name);
      lunio__spawn(L, loop, 1);
      lua_pop(L, 1);
    }
  lua_settop(L, top);
}

/* Unregisters every handler of w (the loop closes). */
static void drop_handlers(sigwatch *w) {
  lua_State *L = lunio__loop_state(w->loop);
  int i, n;
  if (L == NULL || lua_rawgetp(L, LUA_REGISTRYINDEX, w) != LUA_TTABLE) {
    if (L != NULL)
      lua_pop(L, 1);
    return;
  }
  n = (int)lua_rawlen(L, -1);
  for (i = 1; i <= n; i++) {
    sighandler *sh;
    lua_rawgeti(L, -1, i);
    sh = lua_touserdata(L, -1);
    if (sh != NULL)
      sh->w = NULL;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, w);
  w->nhandlers = 0;
}

/* Teardown, while active: its waiters were settled already (their
 * on_cancel left the list); the handlers are closed. */
static void watch_close(lunio_resource *r) {
  sigwatch *w = (sigwatch *)r;
  drop_handlers(w);
  w->waiters.n = 0;
  watch_update(w);
}

/* Teardown: every watcher's handle closes and frees it. */
static void sig_ext_close(lunio_loop *loop, void *ext) {
  sig_loop *sl = ext;
  size_t i;
  for (i = 0; i < NSIGNALS; i++) {
    sigwatch *w = sl->w[i];
    if (w == NULL)
      continue;
    sl->w[i] = NULL;
    w->closed = 1;
    if (w->active)
      watch_close(&w->res);
    lunio__defer_cancel(loop, &w->dispatch);
    uv_close((uv_handle_t *)&w->h, on_watch_closed);
  }
}

/* ---- wait --------------------------------------------------------------- */

static void wait_on_cancel(lunio_task *t, void *data) {
  sigwatch *w = data;
  lunio__tasklist_remove(&w->waiters, t);
  watch_update(w);
}

/* The frame is [name]; ctx is the slot. */
static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  lunio__resumed(L, lunio__task_of(L));
  lua_pushstring(L, signal_names[ctx].name);
  return 1;
}

/* wait(name) -> name, at the next delivery of the signal */
static int signal_wait(lua_State *L) {
  int slot = check_signal(L, 1), rc;
  lunio_task *t = lunio__check_in_task(L, "wait");
  sigwatch *w = get_watch(L, t->loop, slot);
  lua_settop(L, 1);
  lunio__tasklist_add(L, &w->waiters, t);
  rc = watch_update(w);
  if (rc < 0) {
    w->waiters.n--;
    return lunio__uv_error_raise(L, rc, "cannot watch the signal");
  }
  return lunio__park_c(L, t, wait_on_cancel, w, slot, wait_k);
}

/* ---- on ----------------------------------------------------------------- */

/* on(name, fn) -> SignalHandler: fn(name) runs as a new task per delivery,
 * until handler:close() */
static int signal_on(lua_State *L) {
  int slot = check_signal(L, 1), rc;
  lunio_loop *loop;
  sigwatch *w;
  sighandler *sh;
  lunio__check_callable(L, 2);
  loop = lunio__target_loop(L);
  w = get_watch(L, loop, slot);
  lua_settop(L, 2);
  sh = lua_newuserdatauv(L, sizeof *sh, 1);
  sh->w = NULL;
  luaL_setmetatable(L, HANDLER_MT);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  push_handlers(L, w);
  lua_pushvalue(L, 3);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  lua_pop(L, 1);
  sh->w = w;
  w->nhandlers++;
  rc = watch_update(w);
  if (rc < 0) { /* undo the registration */
    push_handlers(L, w);
    lua_pushnil(L);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2));
    lua_pop(L, 1);
    sh->w = NULL;
    w->nhandlers--;
    return lunio__uv_error_raise(L, rc, "cannot watch the signal");
  }
  return 1;
}

static sighandler *check_handler(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, HANDLER_MT);
}

/* handler:close(): no more tasks for later deliveries (idempotent) */
static int handler_close(lua_State *L) {
  sighandler *sh = check_handler(L, 1);
  sigwatch *w = sh->w;
  int i, n;
  if (w == NULL)
    return 0;
  sh->w = NULL;
  push_handlers(L, w);
  n = (int)lua_rawlen(L, -1);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    if (lua_rawequal(L, -1, 1)) {
      lua_pop(L, 1);
      for (; i < n; i++) { /* close the gap, keeping the order */
        lua_rawgeti(L, -1, i + 1);
        lua_rawseti(L, -2, i);
      }
      lua_pushnil(L);
      lua_rawseti(L, -2, n);
      break;
    }
    lua_pop(L, 1);
  }
  if (n <= 1) { /* the last one: drop the table */
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, w);
  }
  lua_pop(L, 1);
  w->nhandlers--;
  watch_update(w);
  return 0;
}

/* handler:active() -> whether it still runs for deliveries */
static int handler_active(lua_State *L) {
  lua_pushboolean(L, check_handler(L, 1)->w != NULL);
  return 1;
}

static int handler_tostring(lua_State *L) {
  sighandler *sh = check_handler(L, 1);
  if (sh->w != NULL)
    lua_pushfstring(L, "lunio.SignalHandler<%s>",
                    signal_names[sh->w->slot].name);
  else
    lua_pushliteral(L, "lunio.SignalHandler<closed>");
  return 1;
}

void lunio__open_signal(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"wait", signal_wait}, {"on", signal_on}, {NULL, NULL}};
  static const luaL_Reg methods[] = {
      {"close", handler_close}, {"active", handler_active}, {NULL, NULL}};
  lua_newtable(L);
  luaL_setfuncs(L, funcs, 0);
  if (luaL_newmetatable(L, HANDLER_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, handler_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, handler_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
}
