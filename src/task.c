/*
 * task.c - the Lua types Task and Future, and the core functions that
 * spawn, sleep, park and wake tasks.
 *
 * A Task (userdata "lunio.Task") is a small C struct plus one user value
 * that holds, in turn, the callable (and its arguments) before the first
 * step, the coroutine while it runs, and the results or error once done.
 * sched.c runs them. A Future (userdata "lunio.Future") is the same struct
 * without a coroutine; a pending one is listed (weakly) by its loop, which
 * settles it when it closes.
 *
 * Lifetime: a task's or future's loop pointer is dereferenced only while
 * it is not done (its loop settles and detaches everything pending when it
 * closes), or for a failed task whose error nobody retrieved (its loop
 * reports and marks those when it closes). A done object can outlive its
 * loop.
 */
#include <string.h>

#include "internal.h"

static lunio_task *check_task(lua_State *L, int arg) {
  lunio_task *t = lunio__to_awaitable(L, arg);
  if (t == NULL || t->kind != LUNIO_KIND_TASK)
    luaL_typeerror(L, arg, "lunio.Task");
  return t;
}

/* Raises kind "closed" for an object whose loop closed (it was settled
 * and detached then). */
static void check_attached(lua_State *L, lunio_task *t) {
  if (t->loop == NULL)
    lunio__error_raise(L, "closed", "its loop is closed");
}

static lunio_task *check_future(lua_State *L, int arg) {
  return luaL_checkudata(L, arg, LUNIO_FUTURE_MT);
}

/* __gc of a failed task's watcher (uv 1: the task; see lunio__finish):
 * report an error nobody looked at. The loop is alive here: closing a loop
 * reports (and so marks) all of its failed tasks. */
static int watch_gc(lua_State *L) {
  lunio_task *t;
  lua_getiuservalue(L, 1, 1);
  t = lua_touserdata(L, -1);
  if (t != NULL && !(t->flags & LUNIO_F_RETRIEVED) && t->loop &&
      !t->loop->closed)
    lunio__report_task(L, t->loop, -1);
  return 0;
}

/* spawn(fn, ...) -> Task */
static int core_spawn(lua_State *L) {
  lunio_loop *loop = LUNIO_RUNNING_UP(L, 1);
  lunio__check_callable(L, 1);
  lunio__spawn(L, loop ? loop : lunio__default_loop(L), lua_gettop(L) - 1);
  return 1;
}

/* sleep's frame is [seconds] or [seconds, value] (`base` slots); ctx is
 * the sleeping task. Returns the value when one was given. */
static int sleep_resume(lua_State *L, lua_KContext ctx, int base,
                        lua_KFunction self) {
  lunio_task *t = (lunio_task *)ctx;
  if (!lunio__resume_ok(L, t)) {
    lua_settop(L, base);
    return lunio__refuse_resume(L, ctx, self);
  }
  if (t->flags & (LUNIO_F_WAKE_ERROR | LUNIO_F_MUST_CANCEL))
    lunio__resumed(L, t);
  lua_settop(L, base);
  return base - 1;
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return sleep_resume(L, ctx, 1, sleep_k);
}

static int sleep_value_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return sleep_resume(L, ctx, 2, sleep_value_k);
}

/* sleep(seconds [, value]) -> value (nothing when none was given) */
static int core_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  int base = lua_gettop(L) >= 2 ? 2 : 1;
  lunio_task *t;
  luaL_argcheck(L, s == s, 1, "NaN is not a duration");
  t = lunio__check_in_task_of(L, LUNIO_RUNNING_UP(L, 1), "sleep");
  lua_settop(L, base);
  if (t->flags & LUNIO_F_MUST_CANCEL) {
    lunio__take_cancel(L, t);
    return lua_error(L);
  }
  if (s > 0) {
    t->u.when = lunio__deadline(lunio__time(t->loop), s);
    if (lunio__heap_push(&t->loop->heap, t) != 0)
      return luaL_error(L, "not enough memory");
    t->state = LUNIO_SUSPENDED;
    t->wait = LUNIO_WAIT_TIMER;
  } else { /* sleep(0): go to the back of the ready queue */
    t->state = LUNIO_READY;
    t->wait = LUNIO_WAIT_NONE;
    t->nwake = 0;
    lunio__ready_push(t->loop, t);
  }
  t->loop->awaited = 1;
  return lua_yieldk(L, 0, (lua_KContext)t, base == 2 ? sleep_value_k : sleep_k);
}

/* park's frame is empty; ctx is the parked task. */
static int park_k(lua_State *L, int status, lua_KContext ctx) {
  lunio_task *t = (lunio_task *)ctx;
  int n;
  (void)status;
  if (!lunio__resume_ok(L, t)) {
    lua_settop(L, 0);
    return lunio__refuse_resume(L, ctx, park_k);
  }
  n = lua_gettop(L);
  if (lunio__resumed_failed(L, t))
    return 2;
  lua_pushboolean(L, 1);
  lua_insert(L, 1);
  return n + 1;
}

/* park() -> true, ... (values given to wake) | false, cancel_error
 * The building block of Lua-level primitives: it never raises for a
 * cancellation, so the caller can clean up before re-raising. */
static int core_park(lua_State *L) {
  lunio_task *t = lunio__check_in_task_of(L, LUNIO_RUNNING_UP(L, 1), "park");
  lua_settop(L, 0);
  if (t->flags & LUNIO_F_MUST_CANCEL) {
    lua_pushboolean(L, 0);
    lunio__take_cancel(L, t);
    return 2;
  }
  t->flags |= LUNIO_F_LUAPARK;
  t->state = LUNIO_SUSPENDED;
  t->wait = LUNIO_WAIT_NONE;
  t->loop->awaited = 1;
  return lua_yieldk(L, 0, (lua_KContext)t, park_k);
}

/* wake(task, ...) -> true if the task was parked by park() and is now
 * scheduled to resume with the values, false otherwise. */
static int core_wake(lua_State *L) {
  lunio_task *t = check_task(L, 1);
  int n = lua_gettop(L) - 1;
  luaL_argcheck(L, n <= LUNIO_MAX_WAKE, LUNIO_MAX_WAKE + 2,
                "too many values to wake a task with");
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
  lunio_task *t = lunio__task_of_running(L, LUNIO_RUNNING_UP(L, 1));
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
  lunio__push_loop_field(L, t->loop, LUNIO_LT_CANCELS);
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
/* Pushes the first undelivered cancel error of the task t (userdata at
 * ud) without taking it, or nil. */
static void push_pending_cancel(lua_State *L, lunio_task *t, int ud) {
  ud = lua_absindex(L, ud);
  if (!(t->flags & LUNIO_F_MUST_CANCEL)) {
    lua_pushnil(L);
    return;
  }
  lunio__push_loop_field(L, t->loop, LUNIO_LT_CANCELS);
  lua_pushvalue(L, ud);
  if (lua_rawget(L, -2) == LUA_TTABLE)
    lua_rawgeti(L, -1, 1);
  else
    lua_pushnil(L);
  lua_replace(L, -3);
  lua_pop(L, 1);
}

static int core_pending_cancel(lua_State *L) {
  push_pending_cancel(L, check_task(L, 1), 1);
  return 1;
}

/* now() -> loop time of the running (or default) loop */
static int core_now(lua_State *L) {
  lua_pushnumber(L, lunio__time(lunio__target_loop(L)));
  return 1;
}

/* Future() -> a pending Future bound to the running (or default) loop */
static int core_future(lua_State *L) {
  lunio_loop *loop = lunio__target_loop(L);
  lunio_task *f = lua_newuserdatauv(L, sizeof *f, 1);
  memset(f, 0, sizeof *f);
  f->loop = loop;
  f->kind = LUNIO_KIND_FUTURE;
  f->state = LUNIO_PENDING;
  f->id = ++loop->next_id;
  luaL_setmetatable(L, LUNIO_FUTURE_MT);
  /* Listed (weakly) so that closing the loop settles it. */
  lunio__push_loop_field(L, loop, LUNIO_LT_FUTURES);
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  f->flags |= LUNIO_F_FUTURE_LISTED;
  return 1;
}

/* ---- Lua functions: Task and Future methods ------------------------- */

/* await's frame is [target]; ctx is the awaiting task (park_c checked
 * that the scheduler resumed it). */
static int await_k(lua_State *L, int status, lua_KContext ctx) {
  lunio_task *t = (lunio_task *)ctx, *target = lua_touserdata(L, 1);
  (void)status;
  if (t->flags & LUNIO_F_WAKE_ERROR) { /* cancelled directly */
    t->flags &= ~(LUNIO_F_WAKE_ERROR | LUNIO_F_DELEGATED);
    return lua_error(L);
  }
  if (t->flags & LUNIO_F_DELEGATE) {
    t->flags &= ~LUNIO_F_DELEGATE;
    t->flags |= LUNIO_F_DELEGATED;
    lua_settop(L, 1);
    lunio__push_anchored(L, t->loop, t);
    push_pending_cancel(L, t, -1);
    lua_remove(L, -2);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lunio__error_new(L, "cancelled", "task cancelled");
    }
    lunio__cancel(L, 1);
    if (!LUNIO_IS_DONE(target)) /* wait for it to finish cancelling */
      return lunio__park_task(L, t, target, 0, ctx, await_k);
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
      lunio__take_cancel(L, t);
      return lua_error(L);
    }
  }
  t->flags &= ~LUNIO_F_DELEGATED;
  return lunio__push_results(L, 1);
}

/* task:await() / future:await() -> results */
static int task_await(lua_State *L) {
  lunio_task *target = lunio__check_awaitable(L, 1), *t;
  lua_settop(L, 1);
  if (LUNIO_IS_DONE(target))
    return lunio__push_results(L, 1);
  t = lunio__check_in_task_of(L, LUNIO_RUNNING_UP(L, 1), "await");
  if (t == target)
    return luaL_error(L, "a task cannot await itself");
  if (target->loop != t->loop)
    return luaL_error(L, "cannot await a task of another loop");
  if (target->waiter == 0 && !(target->flags & LUNIO_F_HAS_WAITERS))
    target->waiter = (uintptr_t)t; /* the common case: no table */
  else {
    lunio__push_anchored(L, t->loop, t);
    lunio__add_waiter(L, target, 1, (uintptr_t)t, -1);
    lua_pop(L, 1);
  }
  return lunio__park_task(L, t, target, 1, (lua_KContext)t, await_k);
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
  check_attached(L, t);
  if (LUNIO_IS_DONE(t)) { /* its loop may be gone: the current one runs it */
    lua_pushvalue(L, 1);
    lunio__call_soon(L, lunio__target_loop(L), 1);
    return 0;
  }
  lunio__add_waiter_value(L, t, 1, 2); /* callbacks: always the table */
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
  lunio__push_loop_field(L, t->loop, LUNIO_LT_WAITERS);
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
  lunio__set_task_name(L, 1, 2);
  return 0;
}

/* task:created_at() -> where the task was created (a traceback, recorded
 * in debug mode), or nil */
static int task_created_at(lua_State *L) {
  check_task(L, 1);
  lunio__push_task_origin(L, 1);
  return 1;
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
  lunio__push_task_name(L, 1);
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
    lunio__push_task_name(L, 1);
  return 1;
}

static int future_set_result(lua_State *L) {
  lunio_task *f = check_future(L, 1);
  check_attached(L, f);
  if (LUNIO_IS_DONE(f))
    return lunio__error_raise(L, "invalid_state", "the future is done");
  lunio__finish(L, f, LUNIO_DONE_OK, lua_gettop(L) - 1);
  return 0;
}

static int future_set_error(lua_State *L) {
  lunio_task *f = check_future(L, 1);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  check_attached(L, f);
  if (LUNIO_IS_DONE(f))
    return lunio__error_raise(L, "invalid_state", "the future is done");
  lunio__finish(L, f, LUNIO_DONE_ERROR, 1);
  return 0;
}

/* The methods carry the running cell as their upvalue 1 (task_await reads
 * it); the cell is on the top of the stack. */
static void new_class(lua_State *L, const char *name, const luaL_Reg *common,
                      const luaL_Reg *own) {
  int cell = lua_gettop(L);
  luaL_newmetatable(L, name);
  lua_newtable(L);
  lua_pushvalue(L, cell);
  luaL_setfuncs(L, common, 1);
  lua_pushvalue(L, cell);
  luaL_setfuncs(L, own, 1);
  lua_pushliteral(L, "name");
  lua_pushcclosure(L, task_index, 2);
  lua_setfield(L, -2, "__index");
  lunio__mark_awaitable(L);
  lua_pushcfunction(L, task_tostring);
  lua_setfield(L, -2, "__tostring");
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
  static const luaL_Reg task_own[] = {{"set_name", task_set_name},
                                      {"traceback", task_traceback},
                                      {"created_at", task_created_at},
                                      {NULL, NULL}};
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
  luaL_newmetatable(L, LUNIO_TASK_WATCH_MT);
  lua_pushcfunction(L, watch_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  /* Every function here carries the running cell as upvalue 1: sleep,
   * spawn and await find the running task through it. */
  lunio__push_running_cell(L);
  new_class(L, LUNIO_TASK_MT, common, task_own);
  new_class(L, LUNIO_FUTURE_MT, common, future_own);
  luaL_setfuncs(L, funcs, 1);
  return 0;
}
