/*
 * loop.c - the Lua types Loop and Handle: creating, running and closing
 * loops, callbacks scheduled on them, and SIGINT during run().
 *
 * A Loop (userdata "lunio.Loop") owns a uv_loop_t, the scheduler's timer, a
 * watchdog timer for tests and an async handle that a signal handler may
 * poke. Its Lua-side state is one table, its user value (see internal.h).
 *
 * Lifetime: close() cancels the pending tasks and lets them clean up, then
 * tears the loop down; __gc tears it down without running anything.
 * Teardown settles (cancels and detaches) whatever is still pending, closes
 * every registered resource and module extension, closes any libuv handle
 * left, and runs libuv until every close callback has fired.
 *
 * SIGINT: run() takes SIGINT over only when it has its default action or
 * belongs to the standalone Lua interpreter (which can only interrupt Lua
 * code on its main thread, where a loop runs none), and restores the
 * previous disposition when it returns. A host's own handler is left alone.
 * The first SIGINT cancels the main task; the second interrupts a task busy
 * in Lua code (with a count hook, as lua.c does) and abandons the run; the
 * third gives SIGINT back to the previous disposition and re-raises it.
 */
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char default_key = 'D'; /* registry: the default Loop */

/* ---- default and target loops ------------------------------------------ */

static lunio_loop *new_loop(lua_State *L);

/* Pushes the default loop, creating it when missing or closed. */
static lunio_loop *push_default_loop(lua_State *L) {
  lunio_loop *loop;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &default_key);
  loop = lua_touserdata(L, -1);
  if (loop == NULL || loop->closed) {
    lua_pop(L, 1);
    loop = new_loop(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &default_key);
  }
  return loop;
}

lunio_loop *lunio__default_loop(lua_State *L) {
  lunio_loop *loop = push_default_loop(L);
  lua_pop(L, 1);
  return loop;
}

lunio_loop *lunio__target_loop(lua_State *L) {
  /* (a running task's loop is the running loop) */
  lunio_loop *loop = lunio__running_loop(L);
  return loop ? loop : lunio__default_loop(L);
}

uv_loop_t *lunio__uv(lunio_loop *loop) { return &loop->uv; }
lua_State *lunio__loop_state(lunio_loop *loop) { return loop->L; }

/* ---- handles ----------------------------------------------------------- */

static lunio_task *check_handle(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, LUNIO_HANDLE_MT);
}

static int handle_cancel(lua_State *L) {
  lua_pushboolean(L, lunio__handle_cancel(L, check_handle(L, 1)));
  return 1;
}

static int handle_cancelled(lua_State *L) {
  lunio_task *h = check_handle(L, 1);
  lua_pushboolean(L, (h->flags & LUNIO_F_HANDLE_CANCELLED) != 0);
  return 1;
}

static int handle_when(lua_State *L) {
  lunio_task *h = check_handle(L, 1);
  if (h->heap_idx)
    lua_pushnumber(L, h->u.when);
  else
    lua_pushnil(L);
  return 1;
}

static int handle_tostring(lua_State *L) {
  lunio_task *h = check_handle(L, 1);
  lua_pushfstring(L, "lunio.Handle<%s>",
                  (h->flags & LUNIO_F_HANDLE_CANCELLED) ? "cancelled"
                  : h->state == LUNIO_NEW               ? "scheduled"
                                                        : "done");
  return 1;
}

/* ---- SIGINT ------------------------------------------------------------ */

/* A signal disposition is process-wide, so this is too: which loop's run()
 * holds SIGINT now, and what to give back. Only the thread that installed
 * the handler changes it (other threads see a handler that is not the
 * default and leave SIGINT alone). */
static struct {
  lunio_loop *loop;
  struct sigaction previous;
} sigint_owner;

/* Whether run() may take SIGINT over from the disposition `sa`. */
static int sigint_is_free(const struct sigaction *sa) {
  Dl_info info;
  const char *name, *slash;
  void *h;
  if (sa->sa_flags & SA_SIGINFO)
    return 0;
  if (sa->sa_handler == SIG_DFL)
    return 1;
  if (sa->sa_handler == SIG_IGN)
    return 0;
  /* The standalone interpreter's handler (lua.c's laction) lives in the
   * main program, an executable named lua, lua5.4, lua54 ...; it can only
   * stop Lua code on the main thread, which runs none while a loop runs.
   * Any other program's handler is its own business. */
  h = (void *)(uintptr_t)sa->sa_handler;
  if (dladdr(h, &info) == 0 || info.dli_fname == NULL ||
      strcmp(info.dli_fname, program_invocation_name) != 0)
    return 0;
  slash = strrchr(info.dli_fname, '/');
  name = slash ? slash + 1 : info.dli_fname;
  if (strncmp(name, "lua", 3) != 0)
    return 0;
  for (name += 3; *name != '\0'; name++)
    if (!isdigit((unsigned char)*name) && *name != '.')
      return 0;
  return 1;
}

/* Runs at the next instruction of a task busy in Lua after a second
 * SIGINT: puts back the hook it replaced and interrupts the task. */
static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  lunio_loop *loop = lunio__running_loop(L);
  (void)ar;
  if (loop != NULL && loop->hooked == L) {
    lua_sethook(L, loop->saved_hook, loop->saved_mask, loop->saved_count);
    loop->hooked = NULL;
  } else
    lua_sethook(L, NULL, 0, 0);
  lunio__error_raise(L, "cancelled", "interrupted by SIGINT");
}

static void on_sigint(int signum) {
  lunio_loop *loop = sigint_owner.loop;
  int saved_errno = errno;
  sig_atomic_t n;
  if (loop == NULL)
    return;
  n = ++loop->sigint_count;
  if (n == 2) {
    /* A task may be busy in Lua code and never reach an await: hook the
     * thread it runs on (lua_sethook may be called from a signal
     * handler). */
    lua_State *co = loop->running_co;
    if (co != NULL && loop->hooked == NULL) {
      loop->saved_hook = lua_gethook(co);
      loop->saved_mask = lua_gethookmask(co);
      loop->saved_count = lua_gethookcount(co);
      loop->hooked = co;
      lua_sethook(co, interrupt_hook,
                  LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    }
  } else if (n >= 3) {
    /* Nothing listens any more: the previous disposition decides. */
    sigaction(SIGINT, &sigint_owner.previous, NULL);
    sigint_owner.loop = NULL;
    raise(signum);
  }
  uv_async_send(&loop->wakeup);
  errno = saved_errno;
}

int lunio__owns_sigint(lunio_loop *loop) { return sigint_owner.loop == loop; }

static void sigint_take(lunio_loop *loop) {
  struct sigaction sa, previous;
  if (!loop->signals || sigint_owner.loop != NULL ||
      sigaction(SIGINT, NULL, &previous) != 0 || !sigint_is_free(&previous))
    return;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigint_owner.previous = previous;
  sigint_owner.loop = loop;
  if (sigaction(SIGINT, &sa, NULL) != 0)
    sigint_owner.loop = NULL;
}

static void sigint_give_back(lunio_loop *loop) {
  if (sigint_owner.loop == loop) {
    sigaction(SIGINT, &sigint_owner.previous, NULL);
    sigint_owner.loop = NULL;
  }
  if (loop->hooked != NULL) { /* the hook never ran: undo it */
    if (lua_gethook(loop->hooked) == interrupt_hook)
      lua_sethook(loop->hooked, loop->saved_hook, loop->saved_mask,
                  loop->saved_count);
    loop->hooked = NULL;
  }
}

/* The wakeup handle keeps uv_run waiting while SIGINT may still end a
 * deadlock (real time, handler installed); otherwise a loop where nothing
 * can wake a task reports a deadlock instead of hanging. */
static void update_wakeup_ref(lunio_loop *loop) {
  if (loop->running && sigint_owner.loop == loop && !loop->virtual_time)
    uv_ref((uv_handle_t *)&loop->wakeup);
  else
    uv_unref((uv_handle_t *)&loop->wakeup);
}

static void on_wakeup(uv_async_t *async) { (void)async; }

/* ---- Loop objects ------------------------------------------------------ */

static lunio_loop *check_loop(lua_State *L, int idx) {
  lunio_loop *loop = luaL_checkudata(L, idx, LUNIO_LOOP_MT);
  if (loop->closed)
    lunio__error_raise(L, "closed", "the loop is closed");
  return loop;
}

static int env_flag(const char *name) {
  const char *v = getenv(name);
  return v != NULL && *v != '\0' && strcmp(v, "0") != 0;
}

static lunio_loop *new_loop(lua_State *L) {
  lunio_loop *loop = lua_newuserdatauv(L, sizeof *loop, 1);
  const char *slow = getenv("LUNIO_DEBUG_SLOW");
  int rc;
  memset(loop, 0, sizeof *loop);
  loop->state_ref = loop->task_mt_ref = LUA_NOREF;
  loop->closed = 1; /* until fully initialised: __gc must not touch it */
  luaL_setmetatable(L, LUNIO_LOOP_MT);
  /* The state table: the pending array plus LUNIO_LT_* entries. */
  lua_createtable(L, 0, 8);
  lua_newtable(L);
  lua_rawseti(L, -2, LUNIO_LT_POOL);
  lua_newtable(L);
  lua_rawseti(L, -2, LUNIO_LT_WAITERS);
  lunio__new_weak_table(L);
  lua_rawseti(L, -2, LUNIO_LT_FAILED);
  lua_newtable(L);
  lua_rawseti(L, -2, LUNIO_LT_CANCELS);
  lunio__new_weak_table(L);
  lua_rawseti(L, -2, LUNIO_LT_FUTURES);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, -3, 1);
  loop->state_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  luaL_getmetatable(L, LUNIO_TASK_MT);
  loop->task_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  rc = uv_loop_init(&loop->uv);
  if (rc != 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, loop->state_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, loop->task_mt_ref);
    loop->state_ref = loop->task_mt_ref = LUA_NOREF;
    lunio__uv_error_raise(L, rc, "cannot create a loop");
  }
  loop->uv.data = loop;
  uv_timer_init(&loop->uv, &loop->timer);
  loop->timer.data = loop;
  uv_timer_init(&loop->uv, &loop->watchdog);
  loop->watchdog.data = loop;
  uv_unref((uv_handle_t *)&loop->watchdog);
  uv_async_init(&loop->uv, &loop->wakeup, on_wakeup);
  loop->wakeup.data = loop;
  uv_unref((uv_handle_t *)&loop->wakeup);
  loop->armed = -1;
  loop->signals = 1;
  loop->gc_stress = env_flag("LUNIO_GC_STRESS");
  loop->debug = env_flag("LUNIO_DEBUG");
  loop->slow_step = slow != NULL && atof(slow) > 0 ? atof(slow) : 0.1;
  loop->closed = 0;
  return loop;
}

static void enter(lua_State *L, lunio_loop *loop, int ud) {
  if (lunio__running_loop(L) != NULL)
    luaL_error(L, "cannot run a loop: a loop is already running");
  lunio__set_running_loop(L, loop, ud);
  loop->L = L;
  loop->running = 1;
  loop->stopping = 0;
  loop->interrupted = 0;
  loop->sigint_count = loop->sigint_seen = 0;
  sigint_take(loop);
  update_wakeup_ref(loop);
}

static void leave(lua_State *L, lunio_loop *loop) {
  sigint_give_back(loop);
  lunio__set_running_loop(L, NULL, 0);
  loop->running = 0;
  loop->stopping = 0;
  loop->main = NULL;
  update_wakeup_ref(loop);
}

typedef struct run_state {
  lunio_loop *loop;
  lunio_task *main;
} run_state;

static int drive(lua_State *L) {
  run_state *rs = lua_touserdata(L, 1);
  lunio__drive(L, rs->loop, rs->main);
  return 0;
}

/* Runs drive() protected, between enter() and leave(); re-raises. */
static void run_protected(lua_State *L, lunio_loop *loop, lunio_task *main) {
  run_state rs;
  int rc;
  enter(L, loop, 1);
  loop->main = main;
  rs.loop = loop;
  rs.main = main;
  lua_pushcfunction(L, drive);
  lua_pushlightuserdata(L, &rs);
  rc = lua_pcall(L, 1, 0, 0);
  leave(L, loop);
  if (rc != LUA_OK)
    lua_error(L);
}

/* loop:run(fn, ...) -> results of fn */
static int loop_run(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  int nargs = lua_gettop(L) - 2, main_idx;
  lunio_task *main;
  lunio__check_callable(L, 2);
  if (lunio__running_loop(L) != NULL)
    return luaL_error(L, "cannot run a loop: a loop is already running");
  main = lunio__spawn(L, loop, nargs);
  main_idx = lua_gettop(L);
  run_protected(L, loop, main);
  if (loop->interrupted &&
      (!LUNIO_IS_DONE(main) || main->state == LUNIO_DONE_CANCELLED)) {
    main->flags |= LUNIO_F_RETRIEVED;
    return lunio__error_raise(L, "interrupted", "interrupted by SIGINT");
  }
  if (!LUNIO_IS_DONE(main))
    return lunio__error_raise(L, "invalid_state",
                              "the loop stopped before the main task finished");
  main->flags |= LUNIO_F_RETRIEVED;
  lua_settop(L, main_idx);
  return lunio__push_results(L, main_idx);
}

/* ---- teardown ---------------------------------------------------------- */

static int is_own_handle(lunio_loop *loop, uv_handle_t *h) {
  return h == (uv_handle_t *)&loop->timer ||
         h == (uv_handle_t *)&loop->watchdog ||
         h == (uv_handle_t *)&loop->wakeup;
}

typedef struct walk_state {
  lunio_loop *loop;
  luaL_Buffer *b; /* debug: names of what was left, or NULL */
  int n;
} walk_state;

/* Closes a handle nobody closed (a module that forgot one). */
static void close_leftover(uv_handle_t *h, void *arg) {
  walk_state *ws = arg;
  if (uv_is_closing(h))
    return;
  if (!is_own_handle(ws->loop, h)) {
    ws->n++;
    if (ws->b != NULL) {
      luaL_addstring(ws->b, ws->n > 1 ? ", " : "");
      luaL_addstring(ws->b, uv_handle_type_name(uv_handle_get_type(h)));
    }
  }
  uv_close(h, NULL);
}

/* Debug mode: reports what the loop still holds when it closes. */
static void report_leftovers(lua_State *L, lunio_loop *loop) {
  uint32_t i;
  int ntasks = 0, nparts = 0, parts, nres = lunio__resources_count(loop);
  luaL_Buffer b;
  if (loop->npending == 0 && nres == 0)
    return;
  lua_newtable(L);
  parts = lua_gettop(L);
  lunio__push_loop_table(L, loop);
  for (i = 1; i <= loop->npending; i++) {
    lunio_task *t;
    lua_rawgeti(L, -1, i);
    t = lua_touserdata(L, -1);
    if (t->kind == LUNIO_KIND_TASK) {
      ntasks++;
      lunio__push_task_name(L, -1);
      lua_pushfstring(L, "  %s%s\n", lua_tostring(L, -1),
                      t->co != NULL ? " waiting at:" : "");
      lua_rawseti(L, parts, ++nparts);
      lua_pop(L, 1);
      if (t->co != NULL) {
        luaL_traceback(L, t->co, NULL, 0);
        lua_pushliteral(L, "\n");
        lua_concat(L, 2);
        lua_rawseti(L, parts, ++nparts);
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  luaL_buffinit(L, &b);
  for (i = 1; i <= (uint32_t)nparts; i++) {
    lua_rawgeti(L, parts, i);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  lua_createtable(L, 0, 2);
  lua_pushfstring(L,
                  "the loop closed with %d task(s) pending and %d "
                  "resource(s) open",
                  ntasks, nres);
  lua_setfield(L, -2, "message");
  lua_insert(L, -2);
  lua_setfield(L, -2, "traceback");
  lunio__report(L, loop);
  lua_pop(L, 1); /* parts */
}

/* Closes libuv handles and frees everything C-side; tasks still pending
 * are marked cancelled without running (used by close() after draining and
 * by __gc). */
static void teardown(lua_State *L, lunio_loop *loop) {
  walk_state ws;
  luaL_Buffer b;
  if (loop->closed)
    return;
  loop->closing = 1;
  loop->L = L;
  lunio__report_unretrieved(L, loop);
  if (loop->debug)
    report_leftovers(L, loop);
  /* Tasks first (their cancel hooks detach them from the I/O they wait
   * on), then the resources and the modules' state. */
  lunio__settle_all(L, loop);
  lunio__resources_close(loop);
  lunio__exts_close(loop);
  /* Whatever is still open (a module's own bug) is closed so that the
   * final run cannot block for ever. */
  ws.loop = loop;
  ws.n = 0;
  ws.b = NULL;
  if (loop->debug) {
    luaL_buffinit(L, &b);
    ws.b = &b;
  }
  uv_walk(&loop->uv, close_leftover, &ws);
  if (ws.b != NULL) {
    luaL_pushresult(&b);
    if (ws.n > 0) {
      lua_createtable(L, 0, 1);
      lua_pushfstring(L, "the loop closed %d libuv handle(s) left open: %s",
                      ws.n, lua_tostring(L, -2));
      lua_setfield(L, -2, "message");
      lunio__report(L, loop);
    }
    lua_pop(L, 1);
  }
  uv_run(&loop->uv, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop->uv) != 0) {
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "the loop closed with libuv requests still in flight");
    lua_setfield(L, -2, "message");
    lunio__report(L, loop);
  }
  lunio__exts_free(loop);
  lunio__sched_free(loop);
  /* Nothing reaches this loop's state any more (everything pending was
   * detached): drop the reference, and never use the integer again. */
  luaL_unref(L, LUA_REGISTRYINDEX, loop->state_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, loop->task_mt_ref);
  loop->state_ref = loop->task_mt_ref = LUA_NOREF;
  loop->closed = 1;
}

/* loop:close(): cancels pending tasks, lets them clean up, frees the loop. */
static int loop_close(lua_State *L) {
  lunio_loop *loop = luaL_checkudata(L, 1, LUNIO_LOOP_MT);
  if (loop->closed)
    return 0;
  if (loop->running)
    return luaL_error(L, "cannot close a running loop");
  if (lunio__has_tasks(loop) && lunio__running_loop(L) == NULL)
    run_protected(L, loop, NULL); /* drain: cancel all, run until done */
  teardown(L, loop);
  return 0;
}

static int loop_gc(lua_State *L) {
  lunio_loop *loop = lua_touserdata(L, 1);
  teardown(L, loop);
  return 0;
}

/* ---- Loop methods ------------------------------------------------------ */

static int loop_time(lua_State *L) {
  lua_pushnumber(L, lunio__time(check_loop(L, 1)));
  return 1;
}

static int loop_call_soon(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  lunio__check_callable(L, 2);
  lunio__new_handle(L, loop, 2, -1);
  return 1;
}

static int loop_call_later(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  double delay = luaL_checknumber(L, 2);
  luaL_argcheck(L, delay == delay, 2, "delay is NaN");
  lunio__check_callable(L, 3);
  lunio__new_handle(L, loop, 3,
                    lunio__deadline(lunio__time(loop), delay > 0 ? delay : 0));
  return 1;
}

static int loop_call_at(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  double when = luaL_checknumber(L, 2);
  luaL_argcheck(L, when == when, 2, "time is NaN");
  lunio__check_callable(L, 3);
  lunio__new_handle(L, loop, 3, when > 0 ? when : 0);
  return 1;
}

static int loop_create_task(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  lunio__check_callable(L, 2);
  lunio__spawn(L, loop, lua_gettop(L) - 2);
  return 1;
}

static int loop_stop(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  if (loop->running)
    loop->stopping = 1;
  return 0;
}

static int loop_is_running(lua_State *L) {
  lunio_loop *loop = luaL_checkudata(L, 1, LUNIO_LOOP_MT);
  lua_pushboolean(L, loop->running);
  return 1;
}

/* loop:interrupted() -> whether a SIGINT arrived during the current (or
 * last) run(): the lunio command's in-place lunio.run turns the main
 * task's cancellation into kind "interrupted" with it, as run() does. */
static int loop_interrupted(lua_State *L) {
  lunio_loop *loop = luaL_checkudata(L, 1, LUNIO_LOOP_MT);
  lua_pushboolean(L, loop->interrupted);
  return 1;
}

static int loop_is_closed(lua_State *L) {
  lunio_loop *loop = luaL_checkudata(L, 1, LUNIO_LOOP_MT);
  lua_pushboolean(L, loop->closed);
  return 1;
}

/* loop:all_tasks() -> list of tasks not yet done */
static int loop_all_tasks(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  uint32_t i;
  int n = 0;
  lua_newtable(L);
  lunio__push_loop_table(L, loop);
  for (i = 1; i <= loop->npending; i++) {
    lunio_task *t;
    lua_rawgeti(L, -1, i);
    t = lua_touserdata(L, -1);
    if (t->kind == LUNIO_KIND_TASK && !LUNIO_IS_DONE(t))
      lua_rawseti(L, -3, ++n);
    else
      lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 1;
}

/* loop:scheduled_handles() -> number of call_soon/call_later handles that
 * have not run or been cancelled (used by the testing helper). */
static int loop_scheduled_handles(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  uint32_t i;
  int n = 0;
  lunio__push_loop_table(L, loop);
  for (i = 1; i <= loop->npending; i++) {
    lunio_task *t;
    lua_rawgeti(L, -1, i);
    t = lua_touserdata(L, -1);
    if (t->kind == LUNIO_KIND_HANDLE && !(t->flags & LUNIO_F_HANDLE_CANCELLED))
      n++;
    lua_pop(L, 1);
  }
  lua_pushinteger(L, n);
  return 1;
}

static void count_handle(uv_handle_t *h, void *arg) {
  lunio_loop *loop = h->loop->data;
  if (!is_own_handle(loop, h) && !uv_is_closing(h) && uv_is_active(h))
    ++*(int *)arg;
}

/* loop:active_handles() -> number of active libuv handles besides the
 * scheduler's own (open sockets, pollers, signal watchers ...). */
static int loop_active_handles(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  int n = 0;
  uv_walk(&loop->uv, count_handle, &n);
  lua_pushinteger(L, n);
  return 1;
}

/* loop:open_resources() -> number of registered resources (sessions,
 * streams, servers, processes ...) not closed yet. */
static int loop_open_resources(lua_State *L) {
  lua_pushinteger(L, lunio__resources_count(check_loop(L, 1)));
  return 1;
}

static int loop_set_exception_handler(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  if (!lua_isnil(L, 2))
    lunio__check_callable(L, 2);
  lua_settop(L, 2);
  lunio__push_loop_table(L, loop);
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, LUNIO_LT_HANDLER);
  return 0;
}

static void on_watchdog(uv_timer_t *timer) {
  lunio_loop *loop = timer->data;
  /* Lua runs between ticks, not inside libuv's callback. */
  loop->events |= LUNIO_EV_WATCHDOG;
  if (loop->in_uv)
    uv_stop(&loop->uv);
}

/* loop:set_watchdog(seconds, fn | nil): call fn (soon, outside tasks) after
 * `seconds` of real time, whatever the loop's clock does. Used by the
 * testing helper, whose time limit must hold under virtual time too. */
static int loop_set_watchdog(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  double s, ms;
  lua_settop(L, 3);
  uv_timer_stop(&loop->watchdog);
  loop->events &= ~LUNIO_EV_WATCHDOG;
  lunio__push_loop_table(L, loop);
  if (lua_isnoneornil(L, 3)) {
    lua_pushnil(L);
    lua_rawseti(L, -2, LUNIO_LT_WATCHDOG);
    return 0;
  }
  s = luaL_checknumber(L, 2);
  luaL_argcheck(L, s == s, 2, "NaN is not a duration");
  lunio__check_callable(L, 3);
  lua_pushvalue(L, 3);
  lua_rawseti(L, -2, LUNIO_LT_WATCHDOG);
  ms = s > 0 ? ceil(s * 1000.0) : 0;
  uv_timer_start(&loop->watchdog, on_watchdog, ms < 1e15 ? (uint64_t)ms : 0, 0);
  if (ms >= 1e15) /* "never" */
    uv_timer_stop(&loop->watchdog);
  return 0;
}

/* loop:set_virtual_time(on): autojump clock for tests */
static int loop_set_virtual_time(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  int on = lua_toboolean(L, 2);
  if (on != (int)loop->virtual_time) { /* keep the clock continuous */
    double now = lunio__time(loop);
    loop->virtual_time = on;
    loop->vt_io_start = (double)uv_hrtime() / 1e9;
    loop->vt_offset = on ? now : now - (double)uv_hrtime() / 1e9;
    update_wakeup_ref(loop);
  }
  return 0;
}

/* loop:set_signals(on): whether run() turns SIGINT into cancellation;
 * takes effect at once on a running loop (the REPL switches it around each
 * statement). */
static int loop_set_signals(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  loop->signals = lua_toboolean(L, 2);
  if (loop->running) {
    if (loop->signals)
      sigint_take(loop);
    else
      sigint_give_back(loop);
    update_wakeup_ref(loop);
  }
  return 0;
}

/* loop:set_debug(on [, slow_seconds]) / loop:debug() -> on, slow_seconds */
static int loop_set_debug(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  int on = lua_toboolean(L, 2);
  /* Turned on inside a step: that step's clock starts now, not at some
   * step of long ago. */
  if (on && !loop->debug)
    loop->step_start = lunio__time(loop);
  loop->debug = on;
  if (!lua_isnoneornil(L, 3)) {
    double s = luaL_checknumber(L, 3);
    luaL_argcheck(L, s > 0, 3, "threshold must be positive");
    loop->slow_step = s;
  }
  return 0;
}

static int loop_debug(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  lua_pushboolean(L, loop->debug);
  lua_pushnumber(L, loop->slow_step);
  return 2;
}

static int loop_tostring(lua_State *L) {
  lunio_loop *loop = luaL_checkudata(L, 1, LUNIO_LOOP_MT);
  lua_pushfstring(L, "lunio.Loop<%s, %d pending>",
                  loop->closed    ? "closed"
                  : loop->running ? "running"
                                  : "idle",
                  (int)loop->npending);
  return 1;
}

/* ---- module functions -------------------------------------------------- */

static int core_new_loop(lua_State *L) {
  new_loop(L);
  return 1;
}

static int core_default_loop(lua_State *L) {
  push_default_loop(L);
  return 1;
}

/* running_loop() -> the running Loop or nil */
static int core_running_loop(lua_State *L) {
  lunio__push_running_loop(L);
  return 1;
}

int luaopen_lunio_loop(lua_State *L) {
  static const luaL_Reg loop_methods[] = {
      {"run", loop_run},
      {"time", loop_time},
      {"call_soon", loop_call_soon},
      {"call_later", loop_call_later},
      {"call_at", loop_call_at},
      {"create_task", loop_create_task},
      {"stop", loop_stop},
      {"is_running", loop_is_running},
      {"is_closed", loop_is_closed},
      {"interrupted", loop_interrupted},
      {"close", loop_close},
      {"all_tasks", loop_all_tasks},
      {"scheduled_handles", loop_scheduled_handles},
      {"active_handles", loop_active_handles},
      {"open_resources", loop_open_resources},
      {"set_exception_handler", loop_set_exception_handler},
      {"set_virtual_time", loop_set_virtual_time},
      {"set_watchdog", loop_set_watchdog},
      {"set_signals", loop_set_signals},
      {"set_debug", loop_set_debug},
      {"debug", loop_debug},
      {NULL, NULL}};
  static const luaL_Reg handle_methods[] = {{"cancel", handle_cancel},
                                            {"cancelled", handle_cancelled},
                                            {"when", handle_when},
                                            {NULL, NULL}};
  static const luaL_Reg funcs[] = {
      {"new_loop", core_new_loop},
      {"default_loop", core_default_loop},
      {"running_loop", core_running_loop},
      {"set_exception_handler", lunio__set_global_handler},
      {NULL, NULL}};
  luaL_newmetatable(L, LUNIO_LOOP_MT);
  luaL_newlib(L, loop_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, loop_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, loop_close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, loop_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  luaL_newmetatable(L, LUNIO_HANDLE_MT);
  luaL_newlib(L, handle_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, handle_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
  return 0;
}
