/*
 * join.c - the Lua type Join: one waiter for many tasks, the engine under
 * gather, wait, as_completed and TaskGroup.
 *
 * A Join (userdata "lunio.Join") keeps its members in one Lua array (its
 * first user value) and a count of those not done. It registers itself in
 * each member's waiter slot (a tagged pointer, no Lua table), so waiting
 * for N tasks costs one array entry per task; a member whose slot is taken
 * gets the Join in its loop's waiters table instead, and tells it one tick
 * later. When a member finishes, lunio__finish calls join_done, which
 * counts it, notes the first failure, and wakes the task parked in wait()
 * once the mode's condition holds:
 *   "all"            every member is done
 *   "first_failure"  all done, or one failed or was cancelled (gather)
 *   "first_error"    all done, or one raised (wait's "first_error")
 *   "any"            one more member is done (wait's "first_completed")
 *   "each"           as "any", and the members are queued in completion
 *                    order for pop() (as_completed)
 * A join may also have an on_fail callable (TaskGroup's), scheduled as
 * on_fail(member) soon after a member raised.
 *
 * Lifetime: while a Join is attached to members its loop's state table
 * anchors it (keyed by its address), so the members' raw pointers to it
 * stay valid; close() detaches it from every member. close(true) on a
 * Join with members pending keeps it attached ("lingering") until they
 * finish, so that it still consumes their errors (gather's, as asyncio
 * does); the last one detaches it.
 */
#include <string.h>

#include "internal.h"

#define JOIN_MT "lunio.Join"

enum { J_ALL, J_FIRST_FAILURE, J_FIRST_ERROR, J_ANY, J_EACH };

typedef struct lunio_join {
  lunio_waiter base;
  lunio_loop *loop;
  lunio_task *task;        /* the task parked in wait(), or NULL */
  lunio_task *first_error; /* first member that failed (mode's sense) */
  uint32_t n;              /* members */
  uint32_t pending;        /* members not done */
  uint32_t ndone_unseen;   /* completions since the last wait() */
  uint32_t head, tail;     /* "each": the completion queue (user value 2) */
  uint8_t mode;
  uint8_t retrieve; /* consume the errors of failed members */
  uint8_t attached; /* anchored by the loop, registered with members */
  uint8_t lingering;
  uint8_t unique; /* skip members given twice */
  uint8_t closed;
  uint8_t on_fail; /* user value 2 is a callable for failed members */
  uint8_t shared;  /* the members' list is the caller's (not written) */
} lunio_join;

static const char *const mode_names[] = {"all", "first_failure", "first_error",
                                         "any", "each",          NULL};

static lunio_join *check_join(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, JOIN_MT);
}

/* Anchors (on) or releases (off) the join at idx in its loop's table. */
static void anchor(lua_State *L, lunio_join *j, int idx, int on) {
  idx = lua_absindex(L, idx);
  if (j->loop == NULL || j->loop->closed)
    return;
  lunio__push_loop_table(L, j->loop);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  if (on)
    lua_pushvalue(L, idx);
  else
    lua_pushnil(L);
  lua_rawsetp(L, -2, j);
  lua_pop(L, 1);
}

/* Pushes the join j from its anchor (it is anchored while attached). */
static void push_join(lua_State *L, lunio_join *j) {
  lunio__push_loop_table(L, j->loop);
  lua_rawgetp(L, -1, j);
  lua_remove(L, -2);
}

static uintptr_t tag(lunio_join *j) { return (uintptr_t)j | 1; }

/* Takes the join out of its members' waiter slots and unanchors it. The
 * join's userdata is at idx. */
static void detach(lua_State *L, lunio_join *j, int idx) {
  uint32_t i;
  if (!j->attached)
    return;
  idx = lua_absindex(L, idx);
  lua_getiuservalue(L, idx, 1);
  for (i = 1; i <= j->n; i++) {
    lunio_task *t;
    lua_rawgeti(L, -1, i);
    t = lua_touserdata(L, -1);
    if (t != NULL && t->waiter == tag(j))
      t->waiter = 0;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  j->attached = 0;
  j->lingering = 0;
  anchor(L, j, idx, 0);
}

static int condition(const lunio_join *j) {
  switch (j->mode) {
  case J_ALL:
    return j->pending == 0;
  case J_FIRST_FAILURE:
  case J_FIRST_ERROR:
    return j->pending == 0 || j->first_error != NULL;
  case J_EACH:
    return j->head < j->tail || j->pending == 0;
  default:
    return j->ndone_unseen > 0 || j->pending == 0;
  }
}

static void wake_waiter(lua_State *L, lunio_join *j) {
  lunio_task *t = j->task;
  if (t != NULL && t->state == LUNIO_SUSPENDED &&
      (t->flags & LUNIO_F_LUAPARK)) {
    j->task = NULL;
    lunio__wake(L, t, 0, 0);
  }
}

/* A member finished (lunio__finish, Lua context); its userdata is at ud. */
static void join_done(lua_State *L, lunio_waiter *w, lunio_task *t, int ud) {
  lunio_join *j = (lunio_join *)w;
  int failed;
  if (!j->attached)
    return;
  j->pending--;
  j->ndone_unseen++;
  failed = j->mode == J_FIRST_ERROR ? t->state == LUNIO_DONE_ERROR
                                    : t->state != LUNIO_DONE_OK;
  if (failed && j->first_error == NULL)
    j->first_error = t;
  if (j->retrieve && t->state != LUNIO_DONE_OK)
    t->flags |= LUNIO_F_RETRIEVED;
  if (j->mode == J_EACH || (j->lingering && j->pending == 0) ||
      (j->on_fail && t->state == LUNIO_DONE_ERROR)) {
    int top = lua_gettop(L);
    push_join(L, j);
    if (j->mode == J_EACH) {
      lua_getiuservalue(L, -1, 2);
      lua_pushvalue(L, ud);
      lua_rawseti(L, -2, ++j->tail);
      lua_pop(L, 1);
    } else if (j->on_fail && t->state == LUNIO_DONE_ERROR) {
      lua_getiuservalue(L, -1, 2);
      lua_pushvalue(L, ud);
      lunio__call_soon(L, j->loop, 1);
    }
    if (j->lingering && j->pending == 0)
      detach(L, j, -1);
    lua_settop(L, top);
  }
  if (condition(j))
    wake_waiter(L, j);
}

/* Makes t (userdata at idx) a member of the join at jidx, whose members'
 * list is at midx. */
static void add_member(lua_State *L, lunio_join *j, int jidx, int midx,
                       lunio_task *t, int idx) {
  if (j->unique && t->waiter == tag(j))
    return;
  if (j->shared)
    ++j->n; /* already there */
  else {
    lua_pushvalue(L, idx);
    lua_rawseti(L, midx, ++j->n);
  }
  if (LUNIO_IS_DONE(t)) {
    j->ndone_unseen++;
    if ((j->mode == J_FIRST_ERROR ? t->state == LUNIO_DONE_ERROR
                                  : t->state != LUNIO_DONE_OK) &&
        j->first_error == NULL)
      j->first_error = t;
    if (j->retrieve && t->state != LUNIO_DONE_OK)
      t->flags |= LUNIO_F_RETRIEVED;
    if (j->mode == J_EACH) {
      lua_getiuservalue(L, jidx, 2);
      lua_pushvalue(L, idx);
      lua_rawseti(L, -2, ++j->tail);
      lua_pop(L, 1);
    }
    return;
  }
  if (t->loop != j->loop)
    luaL_error(L, "cannot wait for a task of another loop");
  j->pending++;
  if (!j->attached) {
    j->attached = 1;
    anchor(L, j, jidx, 1);
  }
  /* A Join in the table is called as fn(join, task) soon after. */
  lunio__add_waiter(L, t, idx, tag(j), jidx);
}

/* join(fname, mode, list [, n [, retrieve [, unique [, on_fail]]]]) ->
 * Join. Members: the Tasks and Futures of list[1..n]; callables are
 * spawned. fname names the caller in argument errors. */
static int core_join(lua_State *L) {
  const char *fname = luaL_checkstring(L, 1);
  int mode = luaL_checkoption(L, 2, NULL, mode_names);
  lua_Integer i, n;
  lunio_join *j;
  lunio_loop *loop = lunio__target_loop(L);
  luaL_checktype(L, 3, LUA_TTABLE);
  n = luaL_opt(L, luaL_checkinteger, 4, (lua_Integer)lua_rawlen(L, 3));
  luaL_argcheck(L, n >= 0 && n < 0x7fffffff, 4, "bad length");
  if (!lua_isnoneornil(L, 7)) {
    luaL_argcheck(L, mode != J_EACH, 7, "no on_fail with mode 'each'");
    lunio__check_callable(L, 7);
  }
  lua_settop(L, 7);
  j = lua_newuserdatauv(L, sizeof *j, 2); /* 8 */
  memset(j, 0, sizeof *j);
  j->base.done = join_done;
  j->loop = loop;
  j->mode = (uint8_t)mode;
  j->retrieve = (uint8_t)lua_toboolean(L, 5);
  j->unique = (uint8_t)lua_toboolean(L, 6);
  luaL_setmetatable(L, JOIN_MT);
  if (mode == J_EACH) { /* the completion queue */
    lua_createtable(L, (int)n, 0);
    lua_setiuservalue(L, 8, 2);
  } else if (!lua_isnil(L, 7)) {
    lua_pushvalue(L, 7);
    lua_setiuservalue(L, 8, 2);
    j->on_fail = 1;
  }
  /* 9: the members. While list[1..n] holds only Tasks and Futures (the
   * common case) it is the members' list itself, with no copy; at the
   * first callable (to spawn), or when list is longer than n, a copy. */
  j->shared = n > 0 && !j->unique && lua_rawlen(L, 3) == (size_t)n;
  if (j->shared)
    lua_pushvalue(L, 3);
  else
    lua_createtable(L, (int)n, 0);
  for (i = 1; i <= n; i++) {
    lunio_task *t;
    lua_rawgeti(L, 3, i); /* 10 */
    t = lunio__to_awaitable(L, 10);
    if (t == NULL) {
      if (lua_type(L, 10) != LUA_TFUNCTION &&
          !luaL_getmetafield(L, 10, "__call"))
        return luaL_error(
            L,
            "bad argument #1 to '%s' (element %d is not a Task, Future "
            "or function (%s))",
            fname, (int)i, luaL_typename(L, 10));
      lua_settop(L, 10);
      if (j->shared) { /* from here on, the members are a copy */
        lua_Integer k;
        j->shared = 0;
        lua_createtable(L, (int)n, 0);
        for (k = 1; k < i; k++) {
          lua_rawgeti(L, 3, k);
          lua_rawseti(L, -2, k);
        }
        lua_replace(L, 9);
      }
      lua_pushvalue(L, 10);
      lunio__spawn(L, loop, 0); /* the callable's task */
      lua_replace(L, 10);
      t = lua_touserdata(L, 10);
    }
    add_member(L, j, 8, 9, t, 10);
    lua_settop(L, 9);
  }
  lua_setiuservalue(L, 8, 1);
  return 1;
}

/* join:add(task_or_future) */
static int join_add(lua_State *L) {
  lunio_join *j = check_join(L, 1);
  lunio_task *t = lunio__check_awaitable(L, 2);
  lua_settop(L, 2);
  if (j->closed || j->shared)
    return lunio__error_raise(L, "invalid_state", "the join is closed");
  lua_getiuservalue(L, 1, 1);
  add_member(L, j, 1, 3, t, 2);
  return 0;
}

/* Continuation of wait(): the frame is [join]. */
static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  lunio_task *t = (lunio_task *)ctx;
  lunio_join *j = lua_touserdata(L, 1);
  (void)status;
  if (j->task == t)
    j->task = NULL; /* woken by someone else (a timeout) */
  if (lunio__resumed_failed(L, t))
    return 2;
  lua_settop(L, 1);
  j->ndone_unseen = 0;
  lua_pushboolean(L, 1);
  return 1;
}

/* join:wait() -> true when the mode's condition holds (at once if it does
 * already), or false, err when the task was cancelled (nothing is raised:
 * the caller cleans up first). The task is parked like core.park, so a
 * timer may end the wait early with core.wake(task) (true again). */
static int join_wait(lua_State *L) {
  lunio_join *j = check_join(L, 1);
  lunio_task *t;
  lua_settop(L, 1);
  t = lunio__check_in_task(L, "wait");
  if (t->flags & LUNIO_F_MUST_CANCEL) {
    lua_pushboolean(L, 0);
    lunio__take_cancel(L, t);
    return 2;
  }
  if (condition(j)) {
    j->ndone_unseen = 0;
    lua_pushboolean(L, 1);
    return 1;
  }
  if (j->task != NULL)
    return lunio__error_raise(L, "invalid_state",
                              "another task is waiting on this join");
  j->task = t;
  t->flags |= LUNIO_F_LUAPARK;
  return lunio__park_plain(L, t, (lua_KContext)t, wait_k);
}

/* join:pending() -> members not done */
static int join_pending(lua_State *L) {
  lua_pushinteger(L, check_join(L, 1)->pending);
  return 1;
}

/* join:size() -> members */
static int join_size(lua_State *L) {
  lua_pushinteger(L, check_join(L, 1)->n);
  return 1;
}

/* join:failed() -> the first member that failed (in the mode's sense), or
 * nil */
static int join_failed(lua_State *L) {
  lunio_join *j = check_join(L, 1);
  uint32_t i;
  if (j->first_error == NULL)
    return 0;
  lua_getiuservalue(L, 1, 1);
  for (i = 1; i <= j->n; i++) {
    if (lua_rawgeti(L, -1, i) == LUA_TUSERDATA &&
        lua_touserdata(L, -1) == j->first_error)
      return 1;
    lua_pop(L, 1);
  }
  return 0;
}

/* join:members() -> the members' list (do not modify it) */
static int join_members(lua_State *L) {
  check_join(L, 1);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

/* join:pop() -> the next member in completion order ("each"), or nil */
static int join_pop(lua_State *L) {
  lunio_join *j = check_join(L, 1);
  if (j->mode != J_EACH || j->head >= j->tail)
    return 0;
  lua_getiuservalue(L, 1, 2);
  lua_rawgeti(L, -1, ++j->head);
  lua_pushnil(L);
  lua_rawseti(L, -3, j->head);
  return 1;
}

/* Pushes the first result of the done member t (userdata at idx), or its
 * error value. */
static void push_first_result(lua_State *L, lunio_task *t, int idx) {
  lua_getiuservalue(L, idx, 1);
  if (t->state == LUNIO_DONE_OK) {
    if (t->flags & LUNIO_F_NORESULT) {
      lua_pop(L, 1);
      lua_pushnil(L);
    } else if (t->flags & LUNIO_F_MULTI) {
      lua_rawgeti(L, -1, 1);
      lua_remove(L, -2);
    }
  }
}

/* join:results([return_errors]) -> {n=, first result of each member, in
 * order}: with return_errors an error value stands in for a failed
 * member, else the first failure's error is raised. Every member must be
 * done (raises "invalid_state" otherwise); marks errors retrieved. */
static int join_results(lua_State *L) {
  lunio_join *j = check_join(L, 1);
  int return_errors = lua_toboolean(L, 2);
  uint32_t i;
  lua_settop(L, 1);
  if (!return_errors && j->first_error != NULL) {
    join_failed(L);
    return lunio__push_results(L, lua_gettop(L)); /* raises */
  }
  if (j->pending > 0)
    return lunio__error_raise(L, "invalid_state",
                              "members of the join are still pending");
  lua_getiuservalue(L, 1, 1); /* 2 */
  lua_createtable(L, (int)j->n, 1);
  for (i = 1; i <= j->n; i++) {
    lunio_task *t;
    lua_rawgeti(L, 2, i);
    t = lua_touserdata(L, -1);
    if (t->state != LUNIO_DONE_OK)
      t->flags |= LUNIO_F_RETRIEVED;
    push_first_result(L, t, -1);
    lua_rawseti(L, 3, i);
    lua_pop(L, 1);
  }
  lua_pushinteger(L, j->n);
  lua_setfield(L, 3, "n");
  return 1;
}

/* join:close([linger]): stop waiting on the members. With linger, a join
 * whose members are still pending stays attached until they finish (it
 * keeps consuming their errors when it retrieves). */
static int join_close(lua_State *L) {
  lunio_join *j = check_join(L, 1);
  j->closed = 1;
  if (lua_toboolean(L, 2) && j->attached && j->pending > 0) {
    j->lingering = 1;
    j->task = NULL;
    return 0;
  }
  detach(L, j, 1);
  return 0;
}

/* __call(join, task): a member whose waiter slot was taken tells the join
 * through the loop's waiters table, one tick after it finished. */
static int join_call(lua_State *L) {
  lunio_join *j = check_join(L, 1);
  lunio_task *t = lunio__check_awaitable(L, 2);
  join_done(L, &j->base, t, 2);
  return 0;
}

static int join_tostring(lua_State *L) {
  lunio_join *j = check_join(L, 1);
  lua_pushfstring(L, "lunio.Join<%s, %d of %d pending>", mode_names[j->mode],
                  (int)j->pending, (int)j->n);
  return 1;
}

void lunio__open_join(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"add", join_add},   {"wait", join_wait},       {"pending", join_pending},
      {"size", join_size}, {"failed", join_failed},   {"members", join_members},
      {"pop", join_pop},   {"results", join_results}, {"close", join_close},
      {NULL, NULL}};
  luaL_newmetatable(L, JOIN_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, join_call);
  lua_setfield(L, -2, "__call");
  lua_pushcfunction(L, join_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushcfunction(L, join_close);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
  lua_pushcfunction(L, core_join);
  lua_setfield(L, -2, "join");
}
