/*
 * task.c - Tasks and Futures: coroutines scheduled by the loop.
 *
 * A Task (userdata "lunio.Task") is a small C struct plus one user value
 * that holds, in turn, the callable (and its arguments) before the first
 * step, the coroutine while it runs, and the results or error once done.
 * Coroutines are created on the first step, not at spawn, and go back to a
 * per-loop pool when a task finishes: a task that never suspends costs one
 * userdata, and W1-style bursts reuse one coroutine over and over.
 *
 * Each task body runs under a C trampoline that calls it with lua_pcallk,
 * so errors escaping the body still unwind through a yieldable pcall:
 * __close handlers (task groups, timeouts) can await while an error
 * propagates. The trampoline's message handler adds the traceback.
 *
 * Awaiting: every lunio suspension goes through lunio__park_c (or sleep),
 * which marks the yield as lunio's before lua_yieldk. A yield without the
 * mark is a plain coroutine.yield() inside a task and fails the task.
 *
 * A Future (userdata "lunio.Future") is the same struct without coroutine.
 */
#include <string.h>

#include "internal.h"

static const char names_key = 'N';
static const char task_mt_key = 'T';

#define POOL_MAX 256
#define INLINE_ARGS 3 /* task arguments kept in user values */

/* Every Task/Future metatable holds this key, so recognising one costs a
 * metatable fetch and one raw lookup (this is on the path of every await). */
static const char awaitable_key = 'A';

static lunio_task *to_awaitable(lua_State *L, int idx) {
  lunio_task *t = lua_touserdata(L, idx);
  if (t != NULL && lua_getmetatable(L, idx)) {
    int ok = lua_rawgetp(L, -1, &awaitable_key) != LUA_TNIL;
    lua_pop(L, 2);
    if (ok)
      return t;
  }
  return NULL;
}

lunio_task *lunio__check_awaitable(lua_State *L, int arg) {
  lunio_task *t = to_awaitable(L, arg);
  if (t == NULL)
    luaL_typeerror(L, arg, "lunio.Task or lunio.Future");
  return t;
}

static lunio_task *check_task(lua_State *L, int arg) {
  lunio_task *t = to_awaitable(L, arg);
  if (t == NULL || t->kind != LUNIO_KIND_TASK)
    luaL_typeerror(L, arg, "lunio.Task");
  return t;
}

static lunio_task *check_future(lua_State *L, int arg) {
  return luaL_checkudata(L, arg, LUNIO_FUTURE_MT);
}

lunio_task *lunio__check_in_task(lua_State *L, const char *fname) {
  lunio_task *t = lunio__task_of(L);
  if (t != NULL) {
    if (!lua_isyieldable(L))
      luaL_error(L,
                 "'%s' cannot wait here: the task is inside a C function "
                 "that does not allow yields (such as table.sort, a "
                 "message handler or __gc)",
                 fname);
    return t;
  }
  if (lua_pushthread(L)) {
    luaL_error(L,
               "'%s' called outside a running task "
               "(start one with lunio.run or lunio.create_task)",
               fname);
  }
  luaL_error(L,
             "'%s' called inside a coroutine made with the standard "
             "coroutine library; use lunio.coroutine for coroutines "
             "that await",
             fname);
  return NULL;
}

/* ---- cancellation bookkeeping --------------------------------------- */

/* cancels[task] lists the errors of cancellation requests not delivered
 * yet (a list, so that withdrawing one request keeps the others). One
 * delivery consumes them all; the first is the error raised. */
static void store_cancel(lua_State *L, lunio_loop *loop, int ud) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->cancels_ref);
  lua_pushvalue(L, ud);
  if (lua_rawget(L, -2) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, ud);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  lua_pushvalue(L, -3);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  lua_pop(L, 3); /* list, table, error */
}

/* Pushes the first pending cancel error of the task at ud (forgetting all
 * of them when take). */
static void push_cancel(lua_State *L, lunio_loop *loop, int ud, int take) {
  ud = lua_absindex(L, ud);
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->cancels_ref);
  lua_pushvalue(L, ud);
  if (lua_rawget(L, -2) == LUA_TTABLE)
    lua_rawgeti(L, -1, 1);
  else
    lua_pushnil(L);
  if (take) {
    lua_pushvalue(L, ud);
    lua_pushnil(L);
    lua_rawset(L, -5);
  }
  lua_replace(L, -3);
  lua_pop(L, 1);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lunio__error_new(L, "cancelled", "task cancelled");
  }
}

/* Raises the pending cancellation of the running task t. */
static int deliver_cancel(lua_State *L, lunio_task *t) {
  t->flags &= ~LUNIO_F_MUST_CANCEL;
  lunio__push_anchored(L, t->loop, t);
  push_cancel(L, t->loop, -1, 1);
  return lua_error(L);
}

/* A cancellation requested after the task was woken is raised where it
 * resumes, as asyncio does: the await that was about to return fails. */
#define CANCEL_AT_RESUME(t)                                                    \
  (((t)->flags & (LUNIO_F_MUST_CANCEL | LUNIO_F_DELEGATE)) ==                  \
   LUNIO_F_MUST_CANCEL)

/* ---- results -------------------------------------------------------- */

int lunio__push_results(lua_State *L, int idx) {
  lunio_task *t = lua_touserdata(L, idx);
  t->flags |= LUNIO_F_RETRIEVED;
  lua_getiuservalue(L, idx, 1);
  if (t->state != LUNIO_DONE_OK)
    return lua_error(L);
  if (t->flags & LUNIO_F_NORESULT) {
    lua_pop(L, 1);
    return 0;
  }
  if (t->flags & LUNIO_F_MULTI)
    return lunio__unpack(L, -1);
  return 1;
}

static void push_name(lua_State *L, int idx) {
  lunio_task *t = lua_touserdata(L, idx);
  idx = lua_absindex(L, idx);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &names_key);
  lua_pushvalue(L, idx);
  lua_rawget(L, -2);
  lua_remove(L, -2);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushfstring(L, "%s-%d", t->kind == LUNIO_KIND_TASK ? "Task" : "Future",
                    (int)t->id);
  }
}

void lunio__report_task(lua_State *L, lunio_loop *loop, int idx) {
  lunio_task *t = lua_touserdata(L, idx);
  idx = lua_absindex(L, idx);
  if (t->flags & LUNIO_F_RETRIEVED)
    return;
  t->flags |= LUNIO_F_RETRIEVED;
  lua_createtable(L, 0, 4);
  push_name(L, idx);
  lua_pushfstring(L, "Task exception was never retrieved (%s)",
                  lua_tostring(L, -1));
  lua_setfield(L, -3, "message");
  lua_pop(L, 1);
  lua_getiuservalue(L, idx, 1);
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_getfield(L, -1, "traceback");
    lua_setfield(L, -3, "traceback");
  } else if (lua_type(L, -1) == LUA_TSTRING) {
    const char *tb = strstr(lua_tostring(L, -1), "stack traceback:");
    if (tb != NULL) {
      lua_pushstring(L, tb);
      lua_setfield(L, -3, "traceback");
    }
  }
  lua_setfield(L, -2, "error");
  lua_pushvalue(L, idx);
  lua_setfield(L, -2, "task");
  lunio__report(L, loop);
}

/* __gc of failed tasks: report an error nobody looked at. The loop is alive
 * here: closing a loop reports (and so marks) all of its failed tasks. */
static int failed_gc(lua_State *L) {
  lunio_task *t = lua_touserdata(L, 1);
  if (!(t->flags & LUNIO_F_RETRIEVED) && t->loop && !t->loop->closed)
    lunio__report_task(L, t->loop, 1);
  return 0;
}

static void notify_waiters(lua_State *L, lunio_task *t, int ud) {
  lunio_loop *loop = t->loop;
  int i, n, list;
  t->flags &= ~LUNIO_F_HAS_WAITERS;
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->waiters_ref);
  lua_pushvalue(L, ud);
  lua_rawget(L, -2);
  lua_pushvalue(L, ud);
  lua_pushnil(L);
  lua_rawset(L, -4);
  list = lua_gettop(L);
  n = (int)lua_rawlen(L, list);
  for (i = 1; i <= n; i++) {
    lunio_task *w;
    lua_rawgeti(L, list, i);
    w = lua_type(L, -1) == LUA_TUSERDATA ? to_awaitable(L, -1) : NULL;
    if (w != NULL) {
      if (w->state == LUNIO_SUSPENDED && w->awaiting == t)
        lunio__wake(L, w, 0, 0);
      lua_pop(L, 1);
    } else if (!loop->closing) {
      lua_pushvalue(L, ud);
      lunio__call_soon(L, loop, 1);
    } else
      lua_pop(L, 1);
  }
  lua_pop(L, 2);
}

void lunio__finish(lua_State *L, lunio_task *t, int state, int n) {
  int ud = lua_gettop(L) - n;
  lunio_loop *loop = t->loop;
  t->flags &= ~(LUNIO_F_MULTI | LUNIO_F_NORESULT);
  if (n == 1)
    lua_setiuservalue(L, ud, 1);
  else {
    if (n == 0) {
      lua_pushnil(L);
      t->flags |= LUNIO_F_NORESULT;
    } else {
      int i;
      lua_createtable(L, n, 1);
      for (i = 1; i <= n; i++) {
        lua_pushvalue(L, ud + i);
        lua_rawseti(L, -2, i);
      }
      lua_pushinteger(L, n);
      lua_setfield(L, -2, "n");
      t->flags |= LUNIO_F_MULTI;
    }
    lua_setiuservalue(L, ud, 1);
    lua_settop(L, ud);
  }
  t->state = (uint8_t)state;
  t->co = NULL;
  t->awaiting = NULL;
  t->on_cancel = NULL;
  if (t->flags & LUNIO_F_MUST_CANCEL) {
    t->flags &= ~LUNIO_F_MUST_CANCEL;
    push_cancel(L, loop, ud, 1);
    lua_pop(L, 1);
  }
  if (state == LUNIO_DONE_ERROR && t->kind == LUNIO_KIND_TASK &&
      !(t->flags & LUNIO_F_RETRIEVED)) {
    luaL_setmetatable(L, LUNIO_FAILED_TASK_MT);
    lua_rawgeti(L, LUA_REGISTRYINDEX, loop->failed_ref);
    lua_pushvalue(L, ud);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  if (t->slot)
    lunio__unanchor(L, loop, t);
  if (t->flags & LUNIO_F_HAS_WAITERS)
    notify_waiters(L, t, ud);
  lua_settop(L, ud - 1);
}

/* ---- the trampoline ------------------------------------------------- */

/* Message handler: gives errors the failing task's traceback. */
static int task_msgh(lua_State *co) {
  int type = lua_type(co, 1);
  lua_settop(co, 1);
  if (type == LUA_TSTRING) {
    const char *msg = lua_tostring(co, 1);
    if (strstr(msg, "stack traceback:") == NULL)
      luaL_traceback(co, co, msg, 1);
  } else if (type == LUA_TTABLE && !lunio__is_error(co, 1, "cancelled")) {
    lua_pushliteral(co, "traceback");
    if (lua_rawget(co, 1) == LUA_TNIL) {
      lua_pushliteral(co, "traceback");
      luaL_traceback(co, co, NULL, 1);
      lua_rawset(co, 1);
    }
    lua_settop(co, 1);
  }
  return 1;
}

/* Pops the ready queue's front when it is a task that has not started. */
static lunio_task *next_new_task(lunio_loop *loop) {
  lunio_task *t;
  if (loop->budget == 0 || loop->ready_len == 0)
    return NULL;
  t = loop->ready[loop->ready_head];
  if (t->kind != LUNIO_KIND_TASK || t->state != LUNIO_NEW)
    return NULL;
  loop->budget--;
  return lunio__ready_pop(loop);
}

/* After a body returned (status OK) or raised: stack is [loop, task,
 * msgh, results... | error]. Resolves the task, leaves [loop]. */
static void body_done(lua_State *co, lunio_task *t, int status) {
  lunio_loop *loop = t->loop;
  int failed = status != LUA_OK && status != LUA_YIELD;
  lua_remove(co, 3); /* the message handler */
  loop->current = NULL;
  LUNIO_TASK_OF(co) = NULL;
  if (failed && lunio__is_error(co, -1, "cancelled"))
    lunio__finish(co, t, LUNIO_DONE_CANCELLED, 1);
  else
    lunio__finish(co, t, failed ? LUNIO_DONE_ERROR : LUNIO_DONE_OK,
                  lua_gettop(co) - 2);
  lua_settop(co, 1);
}

static int runner_k(lua_State *co, int status, lua_KContext ctx);

/* Runs the bodies of the new tasks at the front of the ready queue, one
 * after the other, each under lua_pcallk. A body that awaits suspends this
 * coroutine, which then belongs to that task; the scheduler starts another
 * runner for the rest. When that task is resumed and its body returns,
 * runner_k resolves it and carries on with new tasks, if any are due. */
static int runner_next(lua_State *co) {
  lunio_loop *loop = lua_touserdata(co, 1);
  lunio_task *t;
  while ((t = next_new_task(loop)) != NULL) {
    int nargs, status;
    lunio__push_anchored(co, loop, t);    /* index 2 */
    if (t->flags & LUNIO_F_MUST_CANCEL) { /* cancelled before it ran */
      t->flags &= ~LUNIO_F_MUST_CANCEL;
      push_cancel(co, loop, 2, 1);
      lunio__finish(co, t, LUNIO_DONE_CANCELLED, 1);
      lua_settop(co, 1);
      continue;
    }
    lua_pushcfunction(co, task_msgh); /* index 3 */
    if (t->flags & LUNIO_F_MULTI) {
      lua_getiuservalue(co, 2, 1);
      nargs = lunio__unpack(co, 4);
      luaL_checkstack(co, LUA_MINSTACK, "too many arguments");
      t->flags &= ~LUNIO_F_MULTI;
    } else {
      int i;
      nargs = t->nwake;
      for (i = 1; i <= nargs; i++)
        lua_getiuservalue(co, 2, i);
      for (i = 2; i <= nargs; i++) { /* release the arguments */
        lua_pushnil(co);
        lua_setiuservalue(co, 2, i);
      }
      t->nwake = 0;
    }
    t->state = LUNIO_RUNNING;
    t->co = co;
    loop->current = t;
    LUNIO_TASK_OF(co) = t;
    status = lua_pcallk(co, nargs - 1, LUA_MULTRET, 3, 0, runner_k);
    body_done(co, t, status);
  }
  return 0;
}

static int runner_k(lua_State *co, int status, lua_KContext ctx) {
  (void)ctx;
  body_done(co, LUNIO_TASK_OF(co), status);
  return runner_next(co);
}

static int runner(lua_State *co) { return runner_next(co); }

static void reset_thread(lua_State *co, lua_State *from) {
#if LUA_VERSION_RELEASE_NUM >= 50406
  lua_closethread(co, from);
#else
  (void)from;
  lua_resetthread(co);
#endif
}

/* Pushes an idle coroutine from the pool, or a new one. */
static lua_State *pool_take(lua_State *L, lunio_loop *loop) {
  if (loop->npool > 0) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, loop->pool_ref);
    lua_rawgeti(L, -1, loop->npool);
    lua_pushnil(L);
    lua_rawseti(L, -3, loop->npool--);
    lua_remove(L, -2);
    return lua_tothread(L, -1);
  }
  return lua_newthread(L);
}

/* Returns the finished coroutine at the top of L to the pool (popped). */
static void pool_put(lua_State *L, lunio_loop *loop) {
  if (loop->npool < POOL_MAX) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, loop->pool_ref);
    lua_insert(L, -2);
    lua_rawseti(L, -2, ++loop->npool);
  }
  lua_pop(L, 1);
}

/* Pushes the thread co onto L. */
static void push_thread(lua_State *L, lua_State *co) {
  lua_pushthread(co);
  lua_xmove(co, L, 1);
}

/* Resumes co and settles the outcome: a lunio await hands co to the task
 * that made it; a finished runner goes back to the pool; a plain
 * coroutine.yield() fails the task that made it. `resumed` is the task co
 * was resumed for (its user value holds co), or NULL for a fresh runner
 * whose thread value the caller pushed on L. */
static void resume(lua_State *L, lunio_loop *loop, lua_State *co, int nargs,
                   lunio_task *resumed) {
  int anchor = resumed == NULL;
  int nres, status = lua_resume(co, L, nargs, &nres);
  lunio_task *owner = loop->current;
  loop->current = NULL;
  if (status == LUA_OK) { /* the runner ran out of work */
    lua_settop(co, 0);
    if (!anchor)
      push_thread(L, co);
    pool_put(L, loop);
    return;
  }
  lua_pop(co, nres);
  if (status == LUA_YIELD && loop->awaited) { /* parked: co is owner's */
    loop->awaited = 0;
    if (owner != resumed) {
      /* The runner went on to other tasks after the one it was resumed
       * for (or is fresh): it now belongs to the one that waits, and only
       * that task's user value keeps it alive. */
      owner->co = co;
      lunio__push_anchored(L, loop, owner);
      push_thread(L, co);
      lua_setiuservalue(L, -2, 1);
      lua_pop(L, 1);
    }
    if (anchor)
      lua_pop(L, 1);
    return;
  }
  /* A plain coroutine.yield() in a task, or an error outside the bodies'
   * pcall (memory): co cannot continue. */
  if (status == LUA_YIELD)
    lunio__error_new(L, "invalid_state",
                     "coroutine.yield() called directly inside a task; use "
                     "lunio.coroutine for generators and lunio functions to "
                     "wait");
  else
    lua_xmove(co, L, 1);
  reset_thread(co, L);
  LUNIO_TASK_OF(co) = NULL;
  if (anchor)
    lua_remove(L, -2); /* the thread */
  if (owner != NULL && !LUNIO_IS_DONE(owner)) {
    lunio__push_anchored(L, loop, owner);
    lua_insert(L, -2);
    lunio__finish(L, owner, LUNIO_DONE_ERROR, 1);
  } else
    lua_pop(L, 1);
}

void lunio__run_new(lua_State *L, lunio_loop *loop) {
  lua_State *co = pool_take(L, loop);
  lua_pushcfunction(co, runner);
  lua_pushlightuserdata(co, loop);
  resume(L, loop, co, 1, NULL);
}

void lunio__step(lua_State *L, lunio_loop *loop, lunio_task *t) {
  int nargs = t->nwake;
  t->nwake = 0;
  t->state = LUNIO_RUNNING;
  loop->current = t;
  resume(L, loop, t->co, nargs, t);
}

/* ---- suspension ------------------------------------------------------ */

void lunio__wake(lua_State *L, lunio_task *t, int n, int error) {
  lunio_loop *loop = t->loop;
  if (n > 0) {
    luaL_checkstack(t->co, n, "too many values");
    lua_xmove(L, t->co, n);
  }
  t->nwake = (uint16_t)n;
  if (error)
    t->flags |= LUNIO_F_WAKE_ERROR;
  if (t->heap_idx)
    lunio__heap_remove(&loop->heap, t);
  t->flags &= ~LUNIO_F_LUAPARK;
  t->awaiting = NULL;
  t->on_cancel = NULL;
  t->cancel_data = NULL;
  t->state = LUNIO_READY;
  lunio__ready_push(loop, t);
}

int lunio__park_c(lua_State *L, lunio_task *t, lunio_cancel_fn on_cancel,
                  void *data, lua_KContext ctx, lua_KFunction k) {
  if (t->flags & LUNIO_F_MUST_CANCEL) {
    if (on_cancel)
      on_cancel(t, data);
    return deliver_cancel(L, t);
  }
  t->state = LUNIO_SUSPENDED;
  t->on_cancel = on_cancel;
  t->cancel_data = data;
  t->loop->awaited = 1;
  return lua_yieldk(L, 0, ctx, k);
}

void lunio__resumed(lua_State *L, lunio_task *t) {
  if (t->flags & LUNIO_F_WAKE_ERROR) {
    t->flags &= ~LUNIO_F_WAKE_ERROR;
    lua_error(L); /* the single wake value is the error */
  }
  if (CANCEL_AT_RESUME(t))
    deliver_cancel(L, t);
}

int lunio__cancel(lua_State *L, int idx) {
  lunio_task *t = lua_touserdata(L, idx);
  int ud = lua_absindex(L, idx);
  if (LUNIO_IS_DONE(t) || t->kind == LUNIO_KIND_HANDLE) {
    lua_pop(L, 1);
    return 0;
  }
  if (t->kind == LUNIO_KIND_FUTURE) {
    lua_pushvalue(L, ud);
    lua_insert(L, -2);
    lunio__finish(L, t, LUNIO_DONE_CANCELLED, 1);
    return 1;
  }
  if (t->flags & LUNIO_F_MUST_CANCEL) { /* already requested: keep it */
    store_cancel(L, t->loop, ud);
    return 1;
  }
  if (t->state != LUNIO_SUSPENDED) { /* new, ready or running */
    t->flags |= LUNIO_F_MUST_CANCEL;
    store_cancel(L, t->loop, ud);
    return 1;
  }
  if (t->awaiting != NULL && !LUNIO_IS_DONE(t->awaiting)) {
    /* Awaiting a task/future: the awaiter cancels it from its await
     * continuation (which holds the target) and keeps waiting for it. */
    t->flags |= LUNIO_F_MUST_CANCEL | LUNIO_F_DELEGATE;
    store_cancel(L, t->loop, ud);
    lunio__wake(L, t, 0, 0);
    return 1;
  }
  if (t->on_cancel)
    t->on_cancel(t, t->cancel_data);
  lunio__wake(L, t, 1, 1);
  return 1;
}

/* ---- Lua functions: module level ------------------------------------ */

lunio_task *lunio__spawn(lua_State *L, lunio_loop *loop, int nargs) {
  int fn = lua_gettop(L) - nargs;
  lunio_task *t;
  if (loop->closing || loop->closed)
    lunio__error_raise(L, "closed", "the loop is closed");
  /* A few arguments ride in extra user values (no table to allocate);
   * more are packed into a table {fn, args..., n = count}. */
  t = lua_newuserdatauv(L, sizeof *t, nargs <= INLINE_ARGS ? nargs + 1 : 1);
  memset(t, 0, sizeof *t);
  t->loop = loop;
  t->kind = LUNIO_KIND_TASK;
  t->state = LUNIO_NEW;
  t->id = ++loop->next_id;
  /* The Task metatable by address, not by name: spawn is a hot path. */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &task_mt_key);
  lua_setmetatable(L, -2);
  if (nargs <= INLINE_ARGS) {
    int i;
    for (i = nargs; i >= 0; i--) {
      lua_pushvalue(L, fn + i);
      lua_setiuservalue(L, -2, i + 1);
    }
    t->nwake = (uint16_t)(nargs + 1);
  } else {
    int i;
    lua_createtable(L, nargs + 1, 1);
    for (i = 0; i <= nargs; i++) {
      lua_pushvalue(L, fn + i);
      lua_rawseti(L, -2, i + 1);
    }
    lua_pushinteger(L, nargs + 1);
    lua_setfield(L, -2, "n");
    t->flags |= LUNIO_F_MULTI;
    lua_setiuservalue(L, -2, 1);
  }
  lunio__anchor(L, loop, -1, t);
  lunio__ready_push(loop, t);
  lua_replace(L, fn);
  lua_settop(L, fn);
  return t;
}

/* The loop new work goes to: the running one, else the default one. */
static lunio_loop *target_loop(lua_State *L) {
  lunio_task *t = lunio__task_of(L);
  lunio_loop *loop;
  if (t != NULL)
    return t->loop;
  loop = lunio__running_loop(L);
  return loop ? loop : lunio__default_loop(L);
}

/* spawn(fn, ...) -> Task */
static int core_spawn(lua_State *L) {
  lunio__check_callable(L, 1);
  lunio__spawn(L, target_loop(L), lua_gettop(L) - 1);
  return 1;
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  lunio_task *t = LUNIO_TASK_OF(L);
  (void)status;
  (void)ctx;
  if (t->flags & (LUNIO_F_WAKE_ERROR | LUNIO_F_MUST_CANCEL))
    lunio__resumed(L, t);
  lua_settop(L, 2);
  return 1;
}

/* sleep(seconds [, value]) -> value */
static int core_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  lunio_task *t;
  luaL_argcheck(L, s == s, 1, "NaN is not a duration");
  t = lunio__check_in_task(L, "sleep");
  lua_settop(L, 2);
  if (t->flags & LUNIO_F_MUST_CANCEL)
    return deliver_cancel(L, t);
  if (s > 0) {
    t->when = lunio__deadline(lunio__time(t->loop), s);
    if (lunio__heap_push(&t->loop->heap, t) != 0)
      return luaL_error(L, "not enough memory");
    t->state = LUNIO_SUSPENDED;
  } else { /* sleep(0): go to the back of the ready queue */
    t->state = LUNIO_READY;
    t->nwake = 0;
    lunio__ready_push(t->loop, t);
  }
  t->on_cancel = NULL;
  t->loop->awaited = 1;
  return lua_yieldk(L, 0, 0, sleep_k);
}

static int park_k(lua_State *L, int status, lua_KContext ctx) {
  lunio_task *t = LUNIO_TASK_OF(L);
  int n = lua_gettop(L);
  (void)status;
  (void)ctx;
  if (t->flags & LUNIO_F_WAKE_ERROR) {
    t->flags &= ~LUNIO_F_WAKE_ERROR;
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  if (CANCEL_AT_RESUME(t)) { /* woken, then cancelled before resuming */
    t->flags &= ~LUNIO_F_MUST_CANCEL;
    lua_settop(L, 0);
    lua_pushboolean(L, 0);
    lunio__push_anchored(L, t->loop, t);
    push_cancel(L, t->loop, -1, 1);
    lua_remove(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, 1);
  return n + 1;
}

/* park() -> true, ... (values given to wake) | false, cancel_error
 * The building block of Lua-level primitives: it never raises for a
 * cancellation, so the caller can clean up before re-raising. */
static int core_park(lua_State *L) {
  lunio_task *t = lunio__check_in_task(L, "park");
  lua_settop(L, 0);
  if (t->flags & LUNIO_F_MUST_CANCEL) {
    t->flags &= ~LUNIO_F_MUST_CANCEL;
    lua_pushboolean(L, 0);
    lunio__push_anchored(L, t->loop, t);
    push_cancel(L, t->loop, -1, 1);
    lua_remove(L, -2);
    return 2;
  }
  t->flags |= LUNIO_F_LUAPARK;
  t->state = LUNIO_SUSPENDED;
  t->on_cancel = NULL;
  t->loop->awaited = 1;
  return lua_yieldk(L, 0, 0, park_k);
}

/* wake(task, ...) -> true if the task was parked by park() and is now
 * scheduled to resume with the values, false otherwise. */
static int core_wake(lua_State *L) {
  lunio_task *t = check_task(L, 1);
  int n = lua_gettop(L) - 1;
  if (t->state != LUNIO_SUSPENDED || !(t->flags & LUNIO_F_LUAPARK)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lunio__wake(L, t, n, 0);
  lua_pushboolean(L, 1);
  return 1;
}

/* current() -> the running Task or nil */
static int core_current(lua_State *L) {
  lunio_task *t = lunio__task_of(L);
  if (t == NULL)
    return 0;
  lunio__push_anchored(L, t->loop, t);
  return 1;
}

/* cancel_with(task_or_future, err) -> boolean: cancel with a given error
 * value (timeout scopes recognise their own cancellation by identity). */
static int core_cancel_with(lua_State *L) {
  lunio__check_awaitable(L, 1);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  lua_pushboolean(L, lunio__cancel(L, 1));
  return 1;
}

/* uncancel(task [, err]) -> boolean: withdraw a requested cancellation that
 * has not been delivered yet: the one made with err (rawequal), or the
 * first. Other pending requests stay (asyncio's uncancel). */
static int core_uncancel(lua_State *L) {
  lunio_task *t = check_task(L, 1);
  int i, n, found = 0;
  if (!(t->flags & LUNIO_F_MUST_CANCEL) || (t->flags & LUNIO_F_DELEGATE)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_settop(L, 2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->loop->cancels_ref);
  lua_pushvalue(L, 1);
  if (lua_rawget(L, -2) != LUA_TTABLE) {
    lua_pushboolean(L, 0);
    return 1;
  }
  n = (int)lua_rawlen(L, -1);
  for (i = 1; i <= n && !found; i++) {
    lua_rawgeti(L, -1, i);
    found = lua_isnil(L, 2) || lua_rawequal(L, -1, 2);
    lua_pop(L, 1);
  }
  if (found) { /* shift the rest down over entry i - 1 */
    for (i = i - 1; i < n; i++) {
      lua_rawgeti(L, -1, i + 1);
      lua_rawseti(L, -2, i);
    }
    lua_pushnil(L);
    lua_rawseti(L, -2, n);
    if (n == 1) {
      t->flags &= ~LUNIO_F_MUST_CANCEL;
      lua_pushvalue(L, 1);
      lua_pushnil(L);
      lua_rawset(L, -4);
    }
  }
  lua_pushboolean(L, found);
  return 1;
}

/* pending_cancel(task) -> the error of a requested, undelivered
 * cancellation, or nil */
static int core_pending_cancel(lua_State *L) {
  lunio_task *t = check_task(L, 1);
  if (!(t->flags & LUNIO_F_MUST_CANCEL))
    return 0;
  push_cancel(L, t->loop, 1, 0);
  return 1;
}

/* now() -> loop time of the running (or default) loop */
static int core_now(lua_State *L) {
  lua_pushnumber(L, lunio__time(target_loop(L)));
  return 1;
}

/* Future() -> a pending Future bound to the running (or default) loop */
static int core_future(lua_State *L) {
  lunio_loop *loop = target_loop(L);
  lunio_task *f = lua_newuserdatauv(L, sizeof *f, 1);
  memset(f, 0, sizeof *f);
  f->loop = loop;
  f->kind = LUNIO_KIND_FUTURE;
  f->state = LUNIO_PENDING;
  f->id = ++loop->next_id;
  luaL_setmetatable(L, LUNIO_FUTURE_MT);
  return 1;
}

/* ---- Lua functions: Task and Future methods ------------------------- */

static int await_k(lua_State *L, int status, lua_KContext ctx) {
  lunio_task *t = LUNIO_TASK_OF(L), *target = lua_touserdata(L, 1);
  (void)status;
  (void)ctx;
  if (t->flags & LUNIO_F_WAKE_ERROR) { /* cancelled directly */
    t->flags &= ~(LUNIO_F_WAKE_ERROR | LUNIO_F_DELEGATED);
    return lua_error(L);
  }
  if (t->flags & LUNIO_F_DELEGATE) {
    t->flags &= ~LUNIO_F_DELEGATE;
    t->flags |= LUNIO_F_DELEGATED;
    lua_settop(L, 1);
    lunio__push_anchored(L, t->loop, t);
    push_cancel(L, t->loop, -1, 0);
    lua_remove(L, -2);
    lunio__cancel(L, 1);
    if (!LUNIO_IS_DONE(target)) { /* wait for it to finish cancelling */
      t->awaiting = target;
      t->state = LUNIO_SUSPENDED;
      t->loop->awaited = 1;
      return lua_yieldk(L, 0, 0, await_k);
    }
  }
  lua_settop(L, 1);
  if (t->flags & LUNIO_F_MUST_CANCEL) {
    /* Cancelled while awaiting: our own cancellation is raised, unless the
     * target swallowed the cancel we passed on and returned normally; then
     * its results are returned and ours waits for the next await. */
    int swallowed =
        (t->flags & LUNIO_F_DELEGATED) && target->state == LUNIO_DONE_OK;
    t->flags &= ~LUNIO_F_DELEGATED;
    if (!swallowed) {
      target->flags |= LUNIO_F_RETRIEVED;
      return deliver_cancel(L, t);
    }
  }
  t->flags &= ~LUNIO_F_DELEGATED;
  return lunio__push_results(L, 1);
}

static void add_waiter(lua_State *L, lunio_task *target, int ud) {
  lunio_loop *loop = target->loop;
  int n;
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->waiters_ref);
  lua_pushvalue(L, ud);
  if (lua_rawget(L, -2) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, ud);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  n = (int)lua_rawlen(L, -1);
  lua_pushvalue(L, -3); /* the waiter (task or function) */
  lua_rawseti(L, -2, n + 1);
  lua_pop(L, 3);
  target->flags |= LUNIO_F_HAS_WAITERS;
}

/* task:await() / future:await() -> results */
static int task_await(lua_State *L) {
  lunio_task *target = lunio__check_awaitable(L, 1), *t;
  lua_settop(L, 1);
  if (LUNIO_IS_DONE(target))
    return lunio__push_results(L, 1);
  t = lunio__check_in_task(L, "await");
  if (t == target)
    return luaL_error(L, "a task cannot await itself");
  if (target->loop != t->loop)
    return luaL_error(L, "cannot await a task of another loop");
  lunio__push_anchored(L, t->loop, t);
  add_waiter(L, target, 1);
  t->awaiting = target;
  return lunio__park_c(L, t, NULL, NULL, 0, await_k);
}

/* task:cancel([msg]) -> boolean */
static int task_cancel(lua_State *L) {
  lunio__check_awaitable(L, 1);
  if (lua_isnoneornil(L, 2))
    lunio__error_new(L, "cancelled", "%s", "task cancelled");
  else
    lunio__error_new(L, "cancelled", "%s", luaL_checkstring(L, 2));
  lua_pushboolean(L, lunio__cancel(L, 1));
  return 1;
}

static int task_done(lua_State *L) {
  lua_pushboolean(L, LUNIO_IS_DONE(lunio__check_awaitable(L, 1)));
  return 1;
}

static int task_cancelled(lua_State *L) {
  lunio_task *t = lunio__check_awaitable(L, 1);
  lua_pushboolean(L, t->state == LUNIO_DONE_CANCELLED);
  return 1;
}

static int task_result(lua_State *L) {
  lunio_task *t = lunio__check_awaitable(L, 1);
  if (!LUNIO_IS_DONE(t))
    return lunio__error_raise(L, "invalid_state", "result is not ready yet");
  lua_settop(L, 1);
  return lunio__push_results(L, 1);
}

/* task:error() -> the error value (the cancellation error when cancelled)
 * or nil */
static int task_error(lua_State *L) {
  lunio_task *t = lunio__check_awaitable(L, 1);
  if (!LUNIO_IS_DONE(t))
    return lunio__error_raise(L, "invalid_state", "result is not ready yet");
  t->flags |= LUNIO_F_RETRIEVED;
  if (t->state == LUNIO_DONE_OK)
    return 0;
  lua_getiuservalue(L, 1, 1);
  return 1;
}

static int task_add_done_callback(lua_State *L) {
  lunio_task *t = lunio__check_awaitable(L, 1);
  lunio__check_callable(L, 2);
  lua_settop(L, 2);
  if (LUNIO_IS_DONE(t)) {
    lua_pushvalue(L, 1);
    lunio__call_soon(L, target_loop(L), 1);
    return 0;
  }
  add_waiter(L, t, 1);
  return 0;
}

/* remove_done_callback(fn) -> number of entries removed */
static int task_remove_done_callback(lua_State *L) {
  lunio_task *t = lunio__check_awaitable(L, 1);
  int i, j = 0, n, removed = 0;
  luaL_checkany(L, 2);
  if (LUNIO_IS_DONE(t) || !(t->flags & LUNIO_F_HAS_WAITERS)) {
    lua_pushinteger(L, 0);
    return 1;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->loop->waiters_ref);
  lua_pushvalue(L, 1);
  lua_rawget(L, -2);
  n = (int)lua_rawlen(L, -1);
  for (i = 1; i <= n; i++) { /* compact the list in place */
    lua_rawgeti(L, -1, i);
    if (lua_rawequal(L, -1, 2)) {
      lua_pop(L, 1);
      removed++;
    } else
      lua_rawseti(L, -2, ++j);
  }
  for (i = j + 1; i <= n; i++) {
    lua_pushnil(L);
    lua_rawseti(L, -2, i);
  }
  lua_pushinteger(L, removed);
  return 1;
}

static int task_set_name(lua_State *L) {
  check_task(L, 1);
  luaL_checkstring(L, 2);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &names_key);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_rawset(L, -3);
  return 0;
}

/* task:traceback() -> where a suspended task waits */
static int task_traceback(lua_State *L) {
  lunio_task *t = check_task(L, 1);
  if (t->co != NULL && (t->state == LUNIO_SUSPENDED || t->state == LUNIO_READY))
    luaL_traceback(L, t->co, NULL, 0);
  else
    lua_pushliteral(L, "");
  return 1;
}

static const char *state_name(const lunio_task *t) {
  switch (t->state) {
  case LUNIO_NEW:
  case LUNIO_READY:
  case LUNIO_PENDING:
    return "pending";
  case LUNIO_RUNNING:
    return "running";
  case LUNIO_SUSPENDED:
    return "waiting";
  case LUNIO_DONE_OK:
    return "done";
  case LUNIO_DONE_ERROR:
    return "failed";
  default:
    return "cancelled";
  }
}

static int task_tostring(lua_State *L) {
  lunio_task *t = lunio__check_awaitable(L, 1);
  push_name(L, 1);
  lua_pushfstring(L, "lunio.%s<%s %s>",
                  t->kind == LUNIO_KIND_TASK ? "Task" : "Future",
                  lua_tostring(L, -1), state_name(t));
  return 1;
}

/* task:state() -> "pending" | "running" | "waiting" | "done" | ... */
static int task_state(lua_State *L) {
  lua_pushstring(L, state_name(lunio__check_awaitable(L, 1)));
  return 1;
}

/* __index: methods (upvalue 1), plus the computed field `name` (the
 * string is upvalue 2, so the check is a pointer comparison). */
static int task_index(lua_State *L) {
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) == LUA_TNIL &&
      lua_rawequal(L, 2, lua_upvalueindex(2)))
    push_name(L, 1);
  return 1;
}

static int future_set_result(lua_State *L) {
  lunio_task *f = check_future(L, 1);
  if (LUNIO_IS_DONE(f))
    return lunio__error_raise(L, "invalid_state", "the future is done");
  lunio__finish(L, f, LUNIO_DONE_OK, lua_gettop(L) - 1);
  return 0;
}

static int future_set_error(lua_State *L) {
  lunio_task *f = check_future(L, 1);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  if (LUNIO_IS_DONE(f))
    return lunio__error_raise(L, "invalid_state", "the future is done");
  lunio__finish(L, f, LUNIO_DONE_ERROR, 1);
  return 0;
}

static void new_class(lua_State *L, const char *name, const luaL_Reg *common,
                      const luaL_Reg *own, int gc) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, common, 0);
  luaL_setfuncs(L, own, 0);
  lua_pushliteral(L, "name");
  lua_pushcclosure(L, task_index, 2);
  lua_setfield(L, -2, "__index");
  lua_pushboolean(L, 1);
  lua_rawsetp(L, -2, &awaitable_key);
  lua_pushcfunction(L, task_tostring);
  lua_setfield(L, -2, "__tostring");
  if (gc) {
    lua_pushcfunction(L, failed_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}

int luaopen_lunio_task(lua_State *L) {
  static const luaL_Reg common[] = {
      {"await", task_await},
      {"cancel", task_cancel},
      {"done", task_done},
      {"cancelled", task_cancelled},
      {"result", task_result},
      {"error", task_error},
      {"state", task_state},
      {"add_done_callback", task_add_done_callback},
      {"remove_done_callback", task_remove_done_callback},
      {NULL, NULL}};
  static const luaL_Reg task_own[] = {
      {"set_name", task_set_name}, {"traceback", task_traceback}, {NULL, NULL}};
  static const luaL_Reg future_own[] = {{"set_result", future_set_result},
                                        {"set_error", future_set_error},
                                        {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"spawn", core_spawn},
                                   {"sleep", core_sleep},
                                   {"park", core_park},
                                   {"wake", core_wake},
                                   {"current", core_current},
                                   {"cancel_with", core_cancel_with},
                                   {"uncancel", core_uncancel},
                                   {"pending_cancel", core_pending_cancel},
                                   {"now", core_now},
                                   {"Future", core_future},
                                   {NULL, NULL}};
  new_class(L, LUNIO_TASK_MT, common, task_own, 0);
  luaL_getmetatable(L, LUNIO_TASK_MT);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &task_mt_key);
  new_class(L, LUNIO_FAILED_TASK_MT, common, task_own, 1);
  new_class(L, LUNIO_FUTURE_MT, common, future_own, 0);
  lua_newtable(L); /* task names, weak keys */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &names_key);
  luaL_setfuncs(L, funcs, 0);
  return 0;
}
