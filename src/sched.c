/*
 * sched.c - the scheduler: the ready ring, anchors, park/wake/step, the
 * runner coroutines, timers and handles, and one tick of the loop.
 *
 * Tasks, futures and handles share one C struct (lunio_task). A pending one
 * is anchored in its loop's pending array (the array part of the loop's state
 * table), so nobody needs to hold it. run() alternates between stepping
 * everything that was ready when the tick began and one pass of libuv
 * (non-blocking when work is ready, blocking otherwise), so tasks woken
 * during a tick run on the next one, in wake-up order.
 *
 * Task bodies run in runner coroutines taken from a per-loop pool: a runner
 * starts the new tasks at the front of the ready queue one after the other,
 * each under lua_pcallk, so a task that never suspends costs one userdata.
 * A body that awaits keeps the runner (it becomes the task's coroutine) and
 * the scheduler starts another runner for the rest.
 *
 * Awaiting: every suspension yields from a C function with a continuation
 * and marks the yield as lunio's (loop->awaited). Only the scheduler may
 * resume a parked coroutine: it records which task it steps (current) and
 * on which thread (running_co); a continuation entered any other way (a
 * plain coroutine.resume of a parked task's coroutine) refuses and yields
 * again, leaving the task parked. Nothing here uses LUA_EXTRASPACE, which
 * belongs to the host application.
 *
 * Module state (the running loop, the global exception handler, task names)
 * is kept in registry slots keyed by static addresses: nothing is shared
 * between Lua states, and each loop's tables hang off its own address.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char cell_key = 'C';    /* the running-loop cell (see below) */
static const char state_key = 'S';   /* {handler = global handler} */
static const char names_key = 'N';   /* task -> name (weak keys) */
static const char refusal_key = 'X'; /* the shared "refused resume" error */
static const char origins_key = 'O'; /* debug: task -> creation traceback */
/* Every Task/Future metatable holds this key, so recognising one costs a
 * metatable fetch and one raw lookup (this is on the path of every await). */
static const char awaitable_key = 'A';

#define POOL_MAX 256
#define INLINE_ARGS 3 /* task arguments kept in user values */

/* A new task's first argument, when it is a number, a boolean or nil, is
 * kept in the task struct (u.when / u.ival, unused until the task first
 * waits) instead of a user value: 16 bytes less per task, which puts the
 * common spawn(fn, number) in a smaller allocation. t->wait says which. */
enum { ARG_NONE, ARG_INT, ARG_FLT, ARG_FALSE, ARG_TRUE, ARG_NIL };

/* Whether the value at idx can ride in the struct; sets t->u/t->wait. */
static int keep_scalar_arg(lua_State *L, int idx, lunio_task *t) {
  switch (lua_type(L, idx)) {
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      t->u.ival = lua_tointeger(L, idx);
      t->wait = ARG_INT;
    } else {
      t->u.when = lua_tonumber(L, idx);
      t->wait = ARG_FLT;
    }
    return 1;
  case LUA_TBOOLEAN:
    t->wait = lua_toboolean(L, idx) ? ARG_TRUE : ARG_FALSE;
    return 1;
  case LUA_TNIL:
    t->wait = ARG_NIL;
    return 1;
  default:
    return 0;
  }
}

static void push_scalar_arg(lua_State *L, lunio_task *t) {
  switch (t->wait) {
  case ARG_INT:
    lua_pushinteger(L, t->u.ival);
    break;
  case ARG_FLT:
    lua_pushnumber(L, t->u.when);
    break;
  case ARG_NIL:
    lua_pushnil(L);
    break;
  default:
    lua_pushboolean(L, t->wait == ARG_TRUE);
  }
}
/* While tasks stay ready tick after tick, poll libuv only every POLL_EVERY
 * ticks: a poll costs about 1.5 us, and ready work needs no I/O to run on.
 * I/O stays fair: it is looked at at least this often. */
#define POLL_EVERY 61

static void arm_timer(lunio_loop *loop);

/* ---- module state -------------------------------------------------- */

/* The running loop lives in the state's "running cell": a small userdata
 * holding the bare pointer, with the Loop userdata as its user value
 * (which anchors it). The hot functions (sleep, spawn, await) carry the
 * cell as an upvalue: reading an upvalue costs a few instructions, a
 * registry lookup by address about 220, once per await or spawn. */
lunio_loop *lunio__running_loop(lua_State *L) {
  lunio_loop **cell;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &cell_key);
  cell = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return cell != NULL ? *cell : NULL;
}

void lunio__push_running_loop(lua_State *L) {
  lunio__push_running_cell(L);
  lua_getiuservalue(L, -1, 1);
  lua_remove(L, -2);
}

void lunio__push_running_cell(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &cell_key) != LUA_TUSERDATA) {
    lua_pop(L, 1);
    *(lunio_loop **)lua_newuserdatauv(L, sizeof(lunio_loop *), 1) = NULL;
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &cell_key);
  }
}

void lunio__set_running_loop(lua_State *L, lunio_loop *loop, int idx) {
  if (loop != NULL)
    lua_pushvalue(L, idx);
  else
    lua_pushnil(L);
  lunio__push_running_cell(L);
  *(lunio_loop **)lua_touserdata(L, -1) = loop;
  lua_insert(L, -2);
  lua_setiuservalue(L, -2, 1);
  lua_pop(L, 1);
}

void lunio__push_loop_table(lua_State *L, lunio_loop *loop) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->state_ref);
}

void lunio__push_loop_field(lua_State *L, lunio_loop *loop, int key) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->state_ref);
  lua_rawgeti(L, -1, key);
  lua_replace(L, -2);
}

/* ---- small helpers -------------------------------------------------- */

void lunio__check_callable(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TFUNCTION)
    return;
  if (!luaL_getmetafield(L, idx, "__call"))
    luaL_typeerror(L, idx, "callable");
  lua_pop(L, 1);
}

/* Pushes {v1, ..., vn, n = n} of the n values from index first on: the
 * packed form lunio__unpack reads (a callable with its arguments, a
 * task's several results). */
static void pack(lua_State *L, int first, int n) {
  int i;
  lua_createtable(L, n, 1);
  for (i = 0; i < n; i++) {
    lua_pushvalue(L, first + i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
}

/* Pushes the table kept in the registry under key, weak-keyed, making it
 * the first time (caches and side tables keyed by tasks or functions). */
void lunio__push_weak_table(lua_State *L, const void *key) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE)
    return;
  lua_pop(L, 1);
  lunio__new_weak_table(L);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

void lunio__new_weak_table(lua_State *L) {
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
}

int lunio__unpack(lua_State *L, int idx) {
  int i, n;
  idx = lua_absindex(L, idx);
  lua_getfield(L, idx, "n");
  n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, n, "too many values");
  for (i = 1; i <= n; i++)
    lua_rawgeti(L, idx, i);
  lua_remove(L, idx);
  return n;
}

lunio_task *lunio__to_awaitable(lua_State *L, int idx) {
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
  lunio_task *t = lunio__to_awaitable(L, arg);
  if (t == NULL)
    luaL_typeerror(L, arg, "lunio.Task or lunio.Future");
  return t;
}

void lunio__mark_awaitable(lua_State *L) {
  lua_pushboolean(L, 1);
  lua_rawsetp(L, -2, &awaitable_key);
}

/* ---- ready queue ----------------------------------------------------- */

/* Makes room for `need` entries. Only anchoring grows the ring: every
 * entry is an anchored object and sits in the ring at most once, so a push
 * (which libuv callbacks make) never allocates and cannot fail. */
static int ready_reserve(lunio_loop *loop, uint32_t need) {
  uint32_t cap, i;
  lunio_task **ring;
  if (need <= loop->ready_cap)
    return 0;
  cap = loop->ready_cap ? loop->ready_cap : 256;
  while (cap < need)
    cap *= 2;
  ring = malloc(cap * sizeof *ring);
  if (ring == NULL)
    return UV_ENOMEM;
  for (i = 0; i < loop->ready_len; i++)
    ring[i] = loop->ready[(loop->ready_head + i) & (loop->ready_cap - 1)];
  free(loop->ready);
  loop->ready = ring;
  loop->ready_cap = cap;
  loop->ready_head = 0;
  return 0;
}

void lunio__ready_push(lunio_loop *loop, lunio_task *t) {
  loop->ready[(loop->ready_head + loop->ready_len++) & (loop->ready_cap - 1)] =
      t;
  /* Work is ready: if this runs inside uv_run (a timer or I/O callback),
   * make it return instead of blocking in poll. uv_run(ONCE) runs due
   * timers before it computes the poll timeout, so without this a wake-up
   * from a timer could be followed by an indefinite block. */
  if (loop->in_uv)
    uv_stop(&loop->uv);
}

static lunio_task *ready_pop(lunio_loop *loop) {
  lunio_task *t = loop->ready[loop->ready_head];
  loop->ready_head = (loop->ready_head + 1) & (loop->ready_cap - 1);
  loop->ready_len--;
  return t;
}

/* ---- the pending array ------------------------------------------------- */

void lunio__anchor(lua_State *L, lunio_loop *loop, int idx, lunio_task *t) {
  if (ready_reserve(loop, loop->npending + 1) != 0)
    luaL_error(L, "not enough memory");
  lunio__push_loop_table(L, loop);
  lua_pushvalue(L, idx < 0 && idx > LUA_REGISTRYINDEX ? idx - 1 : idx);
  lua_rawseti(L, -2, (lua_Integer)loop->npending + 1);
  lua_pop(L, 1);
  t->slot = ++loop->npending;
}

void lunio__unanchor(lua_State *L, lunio_loop *loop, lunio_task *t) {
  uint32_t slot = t->slot;
  if (slot == 0)
    return;
  t->slot = 0;
  lunio__push_loop_table(L, loop);
  if (slot != loop->npending) { /* move the last entry into the hole */
    lunio_task *last;
    lua_rawgeti(L, -1, loop->npending);
    last = lua_touserdata(L, -1);
    last->slot = slot;
    lua_rawseti(L, -2, slot);
  }
  lua_pushnil(L);
  lua_rawseti(L, -2, loop->npending--);
  lua_pop(L, 1);
}

void lunio__push_anchored(lua_State *L, lunio_loop *loop, lunio_task *t) {
  lunio__push_loop_table(L, loop);
  lua_rawgeti(L, -1, t->slot);
  lua_replace(L, -2);
}

/* ---- exception handler ------------------------------------------------- */

static void push_state(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &state_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &state_key);
  }
}

/* Formats the error at idx for people: lunio errors and other values by
 * tostring, tables with string `kind` and `message` fields (errors made by
 * other libraries in lunio's style) as "kind: message". Pushes a string. */
static const char *format_error(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TTABLE &&
      !luaL_getmetafield(L, idx, "__tostring")) {
    lua_getfield(L, idx, "kind");
    lua_getfield(L, idx, "message");
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
      lua_pushfstring(L, "%s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
      lua_replace(L, -3);
      lua_pop(L, 1);
      return lua_tostring(L, -1);
    }
    lua_pop(L, 2);
  } else if (lua_type(L, idx) == LUA_TTABLE)
    lua_pop(L, 1); /* the __tostring metafield */
  return luaL_tolstring(L, idx, NULL);
}

static int format_error_k(lua_State *L) {
  format_error(L, 1);
  return 1;
}

/* format_error in protected mode: an error value whose __tostring raises
 * (or returns no string) must not escape from a report, which runs in the
 * middle of a tick. Pushes a string. */
static const char *format_error_safe(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_pushcfunction(L, format_error_k);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    lua_pop(L, 1);
    lua_pushfstring(L, "(a %s whose __tostring failed)", luaL_typename(L, idx));
  }
  return lua_tostring(L, -1);
}

/* The default handler writes the context to stderr the way Lua's own
 * messages go (lua_writestringerror), so hosts that redirect those see it. */
static int default_handler(lua_State *L) {
  const char *msg, *err, *tb, *origin;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "message");
  lua_getfield(L, 1, "error");
  lua_getfield(L, 1, "traceback");
  lua_getfield(L, 1, "created_at");
  msg = lua_tostring(L, 2);
  tb = lua_tostring(L, 4);
  origin = lua_tostring(L, 5);
  err = lua_isnil(L, 3) ? NULL : format_error_safe(L, 3);
  lua_writestringerror("lunio: %s\n", msg ? msg : "error");
  if (err != NULL)
    lua_writestringerror("%s\n", err);
  if (tb && (err == NULL || strstr(err, "stack traceback:") == NULL))
    lua_writestringerror("%s\n", tb);
  if (origin)
    lua_writestringerror("task created at:\n%s\n", origin);
  return 0;
}

void lunio__report(lua_State *L, lunio_loop *loop) {
  int ctx = lua_absindex(L, -1);
  if (loop != NULL &&
      lua_rawgeti(L, LUA_REGISTRYINDEX, loop->state_ref) == LUA_TTABLE) {
    lua_rawgeti(L, -1, LUNIO_LT_HANDLER);
    lua_remove(L, -2);
  } else {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    push_state(L);
    lua_getfield(L, -1, "handler");
    lua_remove(L, -2);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushcfunction(L, default_handler);
    }
  }
  lua_pushvalue(L, ctx);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    /* A handler that fails must not lose the report: say so, then let the
     * default handler print the original context. */
    lua_writestringerror("lunio: error in the exception handler: %s\n",
                         format_error_safe(L, -1));
    lua_pop(L, 2);
    lua_pushcfunction(L, default_handler);
    lua_pushvalue(L, ctx);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK)
      lua_pop(L, 1);
  }
  lua_settop(L, ctx - 1);
}

/* ---- task names, origins ---------------------------------------------- */

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

/* Pushes where the task at idx was created (recorded in debug mode), or
 * nil. A module-level weak table: done tasks may outlive their loop. */
static void push_origin(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &origins_key) == LUA_TTABLE) {
    lua_pushvalue(L, idx);
    lua_rawget(L, -2);
    lua_remove(L, -2);
  }
}

/* ---- reporting failed tasks -------------------------------------------- */

void lunio__report_task(lua_State *L, lunio_loop *loop, int idx) {
  lunio_task *t = lua_touserdata(L, idx);
  idx = lua_absindex(L, idx);
  if (t->flags & LUNIO_F_RETRIEVED)
    return;
  t->flags |= LUNIO_F_RETRIEVED;
  lua_createtable(L, 0, 5);
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
  push_origin(L, idx);
  lua_setfield(L, -2, "created_at");
  lunio__report(L, loop);
}

void lunio__report_unretrieved(lua_State *L, lunio_loop *loop) {
  int i, n = 0, list;
  lua_newtable(L);
  list = lua_gettop(L);
  lunio__push_loop_field(L, loop, LUNIO_LT_FAILED);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lunio_task *t = lua_touserdata(L, -2);
    lua_pop(L, 1);
    if (t && !(t->flags & LUNIO_F_RETRIEVED)) {
      lua_pushvalue(L, -1);
      lua_rawseti(L, list, ++n);
    }
  }
  lua_pop(L, 1);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, list, i);
    lunio__report_task(L, loop, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* ---- timers ------------------------------------------------------------ */

/* Moves every entry whose deadline passed to the ready queue. */
static void run_timers(lunio_loop *loop) {
  lunio_task *t;
  double now;
  if (loop->heap.len == 0)
    return;
  now = lunio__time(loop);
  while ((t = lunio__heap_peek(&loop->heap)) != NULL && t->u.when <= now) {
    lunio__heap_remove(&loop->heap, t);
    if (t->kind == LUNIO_KIND_HANDLE)
      lunio__ready_push(loop, t);
    else
      lunio__wake(loop->L, t, 0, 0);
  }
}

void lunio__on_timer(uv_timer_t *timer) {
  lunio_loop *loop = timer->data;
  loop->armed = -1;
  run_timers(loop);
  /* Re-arm for what is left: uv_run(ONCE) computes its poll timeout after
   * running timers, so an unarmed timer here would block indefinitely. */
  arm_timer(loop);
}

/* Arms the single uv timer at the earliest deadline, if it changed. An
 * infinite deadline never fires and arms nothing (so it does not keep the
 * loop alive: a task sleeping for ever with nothing else in flight is a
 * deadlock). libuv counts from its cached loop time (whole milliseconds,
 * possibly stale), so the timeout is taken from that clock: the timer never
 * fires before the deadline and at most about a millisecond after it. */
static void arm_timer(lunio_loop *loop) {
  lunio_task *first = lunio__heap_peek(&loop->heap);
  double due_ms;
  if (first == NULL || first->u.when == HUGE_VAL) {
    if (loop->armed >= 0) {
      uv_timer_stop(&loop->timer);
      loop->armed = -1;
    }
    return;
  }
  if (first->u.when == loop->armed)
    return;
  if (loop->virtual_time) /* only while I/O runs the clock at real speed */
    due_ms = (first->u.when - lunio__time(loop)) * 1000.0;
  else
    due_ms =
        (first->u.when - loop->vt_offset) * 1000.0 - (double)uv_now(&loop->uv);
  if (due_ms > 1e15) /* about 30,000 years */
    due_ms = 1e15;
  uv_timer_start(&loop->timer, lunio__on_timer,
                 due_ms <= 0 ? 0 : (uint64_t)ceil(due_ms), 0);
  loop->armed = first->u.when;
}

/* ---- handles (call_soon / call_later / call_at) ------------------------ */

lunio_task *lunio__new_handle(lua_State *L, lunio_loop *loop, int fn,
                              double when) {
  int nargs = lua_gettop(L) - fn;
  lunio_task *h;
  if (loop->closing || loop->closed)
    lunio__error_raise(L, "closed", "the loop is closed");
  h = lua_newuserdatauv(L, sizeof *h, 1);
  memset(h, 0, sizeof *h);
  h->loop = loop;
  h->kind = LUNIO_KIND_HANDLE;
  h->state = LUNIO_NEW;
  h->id = ++loop->next_id;
  luaL_setmetatable(L, LUNIO_HANDLE_MT);
  if (nargs == 0)
    lua_pushvalue(L, fn);
  else {
    pack(L, fn, nargs + 1);
    h->flags |= LUNIO_F_MULTI;
  }
  lua_setiuservalue(L, -2, 1);
  lunio__anchor(L, loop, -1, h);
  if (when < 0)
    lunio__ready_push(loop, h);
  else {
    h->u.when = when;
    if (lunio__heap_push(&loop->heap, h) != 0) {
      lunio__unanchor(L, loop, h);
      luaL_error(L, "not enough memory");
    }
  }
  return h;
}

void lunio__call_soon(lua_State *L, lunio_loop *loop, int nargs) {
  int fn = lua_gettop(L) - nargs;
  lunio__new_handle(L, loop, fn, -1);
  lua_settop(L, fn - 1);
}

int lunio__handle_cancel(lua_State *L, lunio_task *h) {
  if (h->state != LUNIO_NEW || (h->flags & LUNIO_F_HANDLE_CANCELLED))
    return 0;
  h->flags |= LUNIO_F_HANDLE_CANCELLED;
  if (h->heap_idx) { /* not in the ready ring: release it now */
    lunio__heap_remove(&h->loop->heap, h);
    lunio__unanchor(L, h->loop, h);
    h->state = LUNIO_DONE_CANCELLED;
  }
  return 1;
}

static int callback_msgh(lua_State *L) {
  luaL_traceback(L, L, NULL, 1);
  return 2;
}

/* Runs a due handle outside any task; errors go to the handler. */
static void run_handle(lua_State *L, lunio_loop *loop, lunio_task *h) {
  int base = lua_gettop(L), nargs = 0;
  lunio__push_anchored(L, loop, h);
  lunio__unanchor(L, loop, h);
  h->state = LUNIO_DONE_OK;
  if (h->flags & LUNIO_F_HANDLE_CANCELLED) {
    lua_settop(L, base);
    return;
  }
  lua_pushcfunction(L, callback_msgh);
  lua_getiuservalue(L, -2, 1);
  if (h->flags & LUNIO_F_MULTI)
    nargs = lunio__unpack(L, base + 3) - 1;
  if (lua_pcall(L, nargs, 0, base + 2) != LUA_OK) {
    /* stack: handle, msgh, error (and the traceback the handler added) */
    int err = base + 3;
    lua_createtable(L, 0, 4);
    lua_pushliteral(L, "exception in callback");
    lua_setfield(L, -2, "message");
    lua_pushvalue(L, err);
    lua_setfield(L, -2, "error");
    if (lua_gettop(L) > err + 1) {
      lua_pushvalue(L, err + 1);
      lua_setfield(L, -2, "traceback");
    }
    lua_pushvalue(L, base + 1);
    lua_setfield(L, -2, "handle");
    lunio__report(L, loop);
  }
  lua_settop(L, base);
}

/* ---- cancellation bookkeeping ------------------------------------------ */

/* cancels[task] lists the errors of cancellation requests not delivered
 * yet (a list, so that withdrawing one request keeps the others). One
 * delivery consumes them all; the first is the error raised. */
static void store_cancel(lua_State *L, lunio_loop *loop, int ud) {
  lunio__push_loop_field(L, loop, LUNIO_LT_CANCELS);
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
  lunio__push_loop_field(L, loop, LUNIO_LT_CANCELS);
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

/* Pushes the pending cancellation of the running task t and clears it. */
static void take_cancel(lua_State *L, lunio_task *t) {
  t->flags &= ~LUNIO_F_MUST_CANCEL;
  lunio__push_anchored(L, t->loop, t);
  push_cancel(L, t->loop, -1, 1);
  lua_remove(L, -2);
}

/* Raises the pending cancellation of the running task t. */
static int deliver_cancel(lua_State *L, lunio_task *t) {
  take_cancel(L, t);
  return lua_error(L);
}

/* ---- results ----------------------------------------------------------- */

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

static void notify_waiters(lua_State *L, lunio_task *t, int ud) {
  lunio_loop *loop = t->loop;
  int i, n, list;
  t->flags &= ~LUNIO_F_HAS_WAITERS;
  lunio__push_loop_field(L, loop, LUNIO_LT_WAITERS);
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
    w = lunio__to_awaitable(L, -1);
    if (w != NULL) {
      if (w->state == LUNIO_SUSPENDED && w->wait == LUNIO_WAIT_TASK &&
          w->u.awaiting == t)
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
      pack(L, ud + 1, n);
      t->flags |= LUNIO_F_MULTI;
    }
    lua_setiuservalue(L, ud, 1);
    lua_settop(L, ud);
  }
  t->state = (uint8_t)state;
  t->co = NULL;
  t->wait = LUNIO_WAIT_NONE;
  if (t->flags & LUNIO_F_MUST_CANCEL) {
    t->flags &= ~LUNIO_F_MUST_CANCEL;
    push_cancel(L, loop, ud, 1);
    lua_pop(L, 1);
  }
  if (t->flags & LUNIO_F_FUTURE_LISTED) {
    t->flags &= ~LUNIO_F_FUTURE_LISTED;
    lunio__push_loop_field(L, loop, LUNIO_LT_FUTURES);
    lua_pushvalue(L, ud);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  if (t->slot)
    lunio__unanchor(L, loop, t);
  /* Waiters first: a join that consumes errors marks this one retrieved,
   * so it need not be listed as failed. */
  if (t->waiter != 0) {
    uintptr_t w = t->waiter;
    t->waiter = 0;
    if (w & 1) {
      lunio_waiter *jw = (lunio_waiter *)(w & ~(uintptr_t)1);
      jw->done(L, jw, t, ud);
    } else {
      lunio_task *a = (lunio_task *)w;
      if (a->state == LUNIO_SUSPENDED && a->wait == LUNIO_WAIT_TASK &&
          a->u.awaiting == t)
        lunio__wake(L, a, 0, 0);
    }
  }
  if (t->flags & LUNIO_F_HAS_WAITERS)
    notify_waiters(L, t, ud);
  if (state == LUNIO_DONE_ERROR && t->kind == LUNIO_KIND_TASK &&
      !(t->flags & LUNIO_F_RETRIEVED)) {
    /* The __gc that reports the error if nobody retrieves it sits on a
     * watcher made now, not on the task: lua_setmetatable with a __gc
     * searches the collector's list of objects for its object, and a new
     * one is at the head, while an old task lies behind everything made
     * since (a cost per failure that grew with the heap: issue 14's
     * storm). LT_FAILED is weak-keyed, so the watcher lives as long as
     * the task; once both are garbage, its finalizer (uv 1 = the task)
     * resurrects the task for the report. */
    lunio__push_loop_field(L, loop, LUNIO_LT_FAILED);
    lua_pushvalue(L, ud);
    lua_newuserdatauv(L, 0, 1);
    lua_pushvalue(L, ud);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, LUNIO_TASK_WATCH_MT);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  lua_settop(L, ud - 1);
}

/* ---- debug: slow steps ------------------------------------------------- */

/* Debug mode: reports a task that held the loop longer than slow_step,
 * with where it waits now (or that it finished). t's userdata must still
 * be anchored or on L's stack at `ud` (0: look it up). */
static void check_slow(lua_State *L, lunio_loop *loop, lunio_task *t,
                       double started, int ud) {
  double took = lunio__time(loop) - started;
  int pushed = 0;
  if (took < loop->slow_step || loop->virtual_time)
    return;
  if (ud == 0) {
    if (t->slot == 0)
      return;
    lunio__push_anchored(L, loop, t);
    ud = lua_gettop(L);
    pushed = 1;
  }
  lua_createtable(L, 0, 4);
  push_name(L, ud);
  lua_pushfstring(L, "Executing %s took %f seconds (LUNIO_DEBUG_SLOW=%f)",
                  lua_tostring(L, -1), took, loop->slow_step);
  lua_setfield(L, -3, "message");
  lua_pop(L, 1);
  lua_pushvalue(L, ud);
  lua_setfield(L, -2, "task");
  /* (a body that just returned is still RUNNING: it waits nowhere) */
  if (t->co != NULL &&
      (t->state == LUNIO_SUSPENDED || t->state == LUNIO_READY)) {
    luaL_traceback(L, t->co, "the step ended waiting at:", 0);
    lua_setfield(L, -2, "traceback");
  }
  push_origin(L, ud);
  lua_setfield(L, -2, "created_at");
  lunio__report(L, loop);
  /* Only what this function pushed: body_done passes the task's slot of
   * its own stack, which must stay (it once popped it when the body had
   * returned nothing, and the task stayed "running" for ever). */
  if (pushed)
    lua_pop(L, 1);
}

/* ---- the trampoline ---------------------------------------------------- */

/* Message handler: gives errors the failing task's traceback (and, in
 * debug mode, where the task was created). */
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
  return ready_pop(loop);
}

/* After a body returned (status OK) or raised: stack is [loop, task,
 * msgh, results... | error]. Resolves the task, leaves [loop]. */
static void body_done(lua_State *co, lunio_task *t, int status) {
  lunio_loop *loop = t->loop;
  int failed = status != LUA_OK && status != LUA_YIELD;
  lua_remove(co, 3); /* the message handler */
  loop->current = NULL;
  if (loop->debug)
    check_slow(co, loop, t, loop->step_start, 2);
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
      int i, nuv = t->nwake - (t->wait != ARG_NONE); /* user values used */
      nargs = t->nwake;
      lua_getiuservalue(co, 2, 1); /* the callable */
      if (t->wait != ARG_NONE)
        push_scalar_arg(co, t);
      for (i = 2; i <= nuv; i++)
        lua_getiuservalue(co, 2, i);
      for (i = 2; i <= nuv; i++) { /* release the arguments */
        lua_pushnil(co);
        lua_setiuservalue(co, 2, i);
      }
      t->nwake = 0;
      t->wait = LUNIO_WAIT_NONE;
    }
    t->state = LUNIO_RUNNING;
    t->co = co;
    loop->current = t;
    if (loop->debug)
      loop->step_start = lunio__time(loop);
    status = lua_pcallk(co, nargs - 1, LUA_MULTRET, 3, 0, runner_k);
    body_done(co, t, status);
  }
  return 0;
}

static int runner_k(lua_State *co, int status, lua_KContext ctx) {
  lunio_loop *loop = lua_touserdata(co, 1);
  (void)ctx;
  /* Only a resume by the scheduler gets here: a foreign resume stops at
   * the await continuation, which refuses it. */
  body_done(co, loop->current, status);
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
    lua_State *co;
    lunio__push_loop_field(L, loop, LUNIO_LT_POOL);
    lua_rawgeti(L, -1, loop->npool);
    lua_pushnil(L);
    lua_rawseti(L, -3, loop->npool--);
    lua_remove(L, -2);
    co = lua_tothread(L, -1);
    return co;
  }
  return lua_newthread(L);
}

/* Returns the finished coroutine at the top of L to the pool (popped). */
static void pool_put(lua_State *L, lunio_loop *loop) {
  if (loop->npool < POOL_MAX) {
    lunio__push_loop_field(L, loop, LUNIO_LT_POOL);
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
  int nres, status;
  lunio_task *owner;
  loop->running_co = co;
  loop->chain_yieldable = 1;
  if (resumed != NULL) { /* the await's continuation checks this token */
    /* a slot for it: the yield and the wake values may have filled the
     * parked frame (lunio__wake with n == 0 may not grow a stack) */
    if (!lua_checkstack(co, 1))
      luaL_error(L, "stack overflow resuming a task");
    lua_pushlightuserdata(co, resumed);
    nargs++;
  }
  status = lua_resume(co, L, nargs, &nres);
  owner = loop->current;
  loop->current = NULL;
  loop->running_co = NULL;
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
    if (loop->debug)
      check_slow(L, loop, owner, loop->step_start, 0);
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
  if (anchor)
    lua_remove(L, -2); /* the thread */
  if (owner != NULL && !LUNIO_IS_DONE(owner)) {
    lunio__push_anchored(L, loop, owner);
    lua_insert(L, -2);
    lunio__finish(L, owner, LUNIO_DONE_ERROR, 1);
  } else
    lua_pop(L, 1);
}

/* Starts the new tasks at the front of the ready queue (within the tick's
 * budget) in a runner coroutine. */
static void run_new(lua_State *L, lunio_loop *loop) {
  lua_State *co = pool_take(L, loop);
  lua_pushcfunction(co, runner);
  lua_pushlightuserdata(co, loop);
  resume(L, loop, co, 1, NULL);
}

/* Resumes the woken task t. */
static void step(lua_State *L, lunio_loop *loop, lunio_task *t) {
  int nargs = t->nwake;
  t->nwake = 0;
  t->state = LUNIO_RUNNING;
  loop->current = t;
  if (loop->debug)
    loop->step_start = lunio__time(loop);
  resume(L, loop, t->co, nargs, t);
}

/* ---- suspension -------------------------------------------------------- */

void lunio__wake(lua_State *L, lunio_task *t, int n, int error) {
  lunio_loop *loop = t->loop;
  if (n > 0) {
    if (!lua_checkstack(t->co, n))
      luaL_error(L, "too many values to wake a task with");
    lua_xmove(L, t->co, n);
  }
  t->nwake = (uint16_t)n;
  if (error)
    t->flags |= LUNIO_F_WAKE_ERROR;
  if (t->heap_idx)
    lunio__heap_remove(&loop->heap, t);
  t->flags &= ~LUNIO_F_LUAPARK;
  t->wait = LUNIO_WAIT_NONE;
  t->state = LUNIO_READY;
  lunio__ready_push(loop, t);
}

void lunio__tasklist_add(lua_State *L, lunio_tasklist *l, lunio_task *t) {
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 4;
    lunio_task **v = realloc(l->v, (size_t)cap * sizeof *v);
    if (v == NULL)
      luaL_error(L, "not enough memory");
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = t;
}

void lunio__tasklist_remove(lunio_tasklist *l, lunio_task *t) {
  int i;
  for (i = 0; i < l->n; i++)
    if (l->v[i] == t) {
      l->v[i] = l->v[--l->n];
      return;
    }
}

void lunio__tasklist_wake_all(lua_State *L, lunio_tasklist *l) {
  int i, n = l->n;
  l->n = 0;
  for (i = 0; i < n; i++)
    lunio__wake(L, l->v[i], 0, 0);
}

void lunio__tasklist_free(lunio_tasklist *l) {
  free(l->v);
  l->v = NULL;
  l->n = l->cap = 0;
}

lunio_task *lunio__task_of(lua_State *L) {
  return lunio__task_of_running(L, lunio__running_loop(L));
}

lunio_task *lunio__task_of_running(lua_State *L, lunio_loop *running) {
  if (running == NULL || running->current == NULL || running->running_co != L)
    return NULL;
  return running->current;
}

int lunio__resume_ok(lua_State *L, lunio_task *owner) {
  /* The scheduler (and lunio.coroutine's resume of a parked generator)
   * passes the owner's address as a light userdata after the wake values.
   * Pure Lua cannot make a light userdata, and a Task object is a full one,
   * so a foreign resume cannot pass it. Pointer comparison only: owner may
   * be stale after a foreign resume. */
  if (lua_type(L, -1) != LUA_TLIGHTUSERDATA || lua_touserdata(L, -1) != owner)
    return 0;
  lua_pop(L, 1);
  return 1;
}

void lunio__push_refusal(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &refusal_key) == LUA_TNIL) {
    lua_pop(L, 1);
    lunio__error_new(L, "invalid_state",
                     "this coroutine is suspended in a lunio await; only the "
                     "scheduler may resume it");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &refusal_key);
  }
}

int lunio__refuse_resume(lua_State *L, lua_KContext ctx, lua_KFunction k) {
  lunio__push_refusal(L);
  return lua_yieldk(L, 1, ctx, k);
}

/* The continuation of every lunio__park_c: the caller's k and ctx and the
 * parked task ride on the stack in three slots [k, ctx, owner] on top of
 * the caller's frame; `base` (this continuation's context) is the index of
 * the owner slot. */
static int park_c_k(lua_State *L, int status, lua_KContext base) {
  int b = (int)base;
  lunio_task *owner = lua_touserdata(L, b);
  lua_KFunction k;
  lua_KContext kctx;
  if (!lunio__resume_ok(L, owner)) {
    lua_settop(L, b); /* drop what the foreign resumer passed */
    return lunio__refuse_resume(L, base, park_c_k);
  }
  k = (lua_KFunction)(void (*)(void))lua_tocfunction(L, b - 2);
  kctx = (lua_KContext)lua_tointeger(L, b - 1);
  lua_rotate(L, b - 2, -3); /* the slots to the top, wake values down */
  lua_pop(L, 3);
  return k(L, status, kctx);
}

/* Yields the running task t (already marked with what it waits on) until
 * the scheduler resumes it: k and its ctx and t ride on the stack for
 * park_c_k. */
static int suspend(lua_State *L, lunio_task *t, lua_KContext ctx,
                   lua_KFunction k) {
  luaL_checkstack(L, 3, NULL);
  lua_pushcfunction(L, (lua_CFunction)(void (*)(void))k);
  lua_pushinteger(L, (lua_Integer)ctx);
  lua_pushlightuserdata(L, t);
  t->state = LUNIO_SUSPENDED;
  t->loop->awaited = 1;
  return lua_yieldk(L, 0, (lua_KContext)lua_gettop(L), park_c_k);
}

int lunio__park_c(lua_State *L, lunio_task *t, lunio_cancel_fn on_cancel,
                  void *data, lua_KContext ctx, lua_KFunction k) {
  if (t->flags & LUNIO_F_MUST_CANCEL) {
    if (on_cancel)
      on_cancel(t, data);
    return deliver_cancel(L, t);
  }
  if (on_cancel != NULL) {
    t->wait = LUNIO_WAIT_IO;
    t->u.io.fn = on_cancel;
    t->u.io.data = data;
  } else
    t->wait = LUNIO_WAIT_NONE;
  return suspend(L, t, ctx, k);
}

int lunio__park_task(lua_State *L, lunio_task *t, lunio_task *target,
                     int check_cancel, lua_KContext ctx, lua_KFunction k) {
  if (check_cancel && (t->flags & LUNIO_F_MUST_CANCEL))
    return deliver_cancel(L, t);
  t->wait = LUNIO_WAIT_TASK;
  t->u.awaiting = target;
  return suspend(L, t, ctx, k);
}

int lunio__park_plain(lua_State *L, lunio_task *t, lua_KContext ctx,
                      lua_KFunction k) {
  t->wait = LUNIO_WAIT_NONE;
  return suspend(L, t, ctx, k);
}

void lunio__add_waiter(lua_State *L, lunio_task *t, int idx, uintptr_t waiter,
                       int w_idx) {
  /* The slot holds the first waiter only, so that waiters are told in the
   * order they came. */
  if (t->waiter == 0 && !(t->flags & LUNIO_F_HAS_WAITERS))
    t->waiter = waiter;
  else
    lunio__add_waiter_value(L, t, idx, w_idx);
}

void lunio__add_waiter_value(lua_State *L, lunio_task *t, int idx, int w_idx) {
  lunio_loop *loop = t->loop;
  int n;
  idx = lua_absindex(L, idx);
  w_idx = lua_absindex(L, w_idx);
  lunio__push_loop_field(L, loop, LUNIO_LT_WAITERS);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, idx);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  n = (int)lua_rawlen(L, -1);
  lua_pushvalue(L, w_idx);
  lua_rawseti(L, -2, n + 1);
  lua_pop(L, 2);
  t->flags |= LUNIO_F_HAS_WAITERS;
}

void lunio__resumed(lua_State *L, lunio_task *t) {
  if (t->flags & LUNIO_F_WAKE_ERROR) {
    t->flags &= ~LUNIO_F_WAKE_ERROR;
    lua_error(L); /* the single wake value is the error */
  }
  if (LUNIO_CANCEL_AT_RESUME(t))
    deliver_cancel(L, t);
}

int lunio__resumed_failed(lua_State *L, lunio_task *t) {
  if (t->flags & LUNIO_F_WAKE_ERROR) {
    t->flags &= ~LUNIO_F_WAKE_ERROR;
    lua_pushboolean(L, 0);
    lua_insert(L, -2); /* the single wake value is the error */
    return 2;
  }
  if (LUNIO_CANCEL_AT_RESUME(t)) {
    lua_pushboolean(L, 0);
    lunio__take_cancel(L, t);
    return 2;
  }
  return 0;
}

lunio_task *lunio__check_in_task(lua_State *L, const char *fname) {
  return lunio__check_in_task_of(L, lunio__running_loop(L), fname);
}

lunio_task *lunio__check_in_task_of(lua_State *L, lunio_loop *running,
                                    const char *fname) {
  lunio_task *t = lunio__task_of_running(L, running);
  if (t != NULL) {
    /* Every coroutine between L and the scheduler must be able to yield:
     * an await inside a lunio.coroutine resumed from table.sort's
     * comparator would park the task and then fail to yield it. */
    if (!LUNIO_CAN_WAIT(L, t))
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
  if (t->wait == LUNIO_WAIT_TASK && !LUNIO_IS_DONE(t->u.awaiting)) {
    /* Awaiting a task/future: the awaiter cancels it from its await
     * continuation (which holds the target) and keeps waiting for it. */
    t->flags |= LUNIO_F_MUST_CANCEL | LUNIO_F_DELEGATE;
    store_cancel(L, t->loop, ud);
    lunio__wake(L, t, 0, 0);
    return 1;
  }
  if (t->wait == LUNIO_WAIT_IO)
    t->u.io.fn(t, t->u.io.data);
  lunio__wake(L, t, 1, 1);
  return 1;
}

/* The pending cancel errors of t as the error to raise, taken from the
 * bookkeeping: used by park_k-style continuations. */
void lunio__take_cancel(lua_State *L, lunio_task *t) { take_cancel(L, t); }

/* ---- spawning ---------------------------------------------------------- */

lunio_task *lunio__spawn(lua_State *L, lunio_loop *loop, int nargs) {
  int fn = lua_gettop(L) - nargs, scalar = 0;
  lunio_task *t;
  if (loop->closing || loop->closed)
    lunio__error_raise(L, "closed", "the loop is closed");
  /* A few arguments ride in extra user values (no table to allocate), the
   * first one in the struct when it is a scalar; more are packed into a
   * table {fn, args..., n = count}. */
  if (nargs >= 1 && nargs <= INLINE_ARGS) {
    int type = lua_type(L, fn + 1);
    scalar = type == LUA_TNUMBER || type == LUA_TBOOLEAN || type == LUA_TNIL;
  }
  t = lua_newuserdatauv(L, sizeof *t,
                        nargs <= INLINE_ARGS ? nargs + 1 - scalar : 1);
  memset(t, 0, sizeof *t);
  if (scalar)
    keep_scalar_arg(L, fn + 1, t);
  t->loop = loop;
  t->kind = LUNIO_KIND_TASK;
  t->state = LUNIO_NEW;
  t->id = ++loop->next_id;
  /* The Task metatable through the loop's own reference (an array
   * lookup; a registry key by name or address costs several times more):
   * spawn is a hot path. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->task_mt_ref);
  lua_setmetatable(L, -2);
  if (nargs <= INLINE_ARGS) {
    int i;
    lua_pushvalue(L, fn);
    lua_setiuservalue(L, -2, 1);
    for (i = 1 + scalar; i <= nargs; i++) { /* arg i in user value i+1-s */
      lua_pushvalue(L, fn + i);
      lua_setiuservalue(L, -2, i + 1 - scalar);
    }
    t->nwake = (uint16_t)(nargs + 1);
  } else {
    pack(L, fn, nargs + 1);
    t->flags |= LUNIO_F_MULTI;
    lua_setiuservalue(L, -2, 1);
  }
  lunio__anchor(L, loop, -1, t);
  if (loop->debug) { /* remember where it was made (weak table) */
    lunio__push_weak_table(L, &origins_key);
    lua_pushvalue(L, -2);
    luaL_traceback(L, L, NULL, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  lunio__ready_push(loop, t);
  lua_replace(L, fn);
  lua_settop(L, fn);
  return t;
}

/* ---- task names (task.c sets them; reports read them) ------------------ */

void lunio__push_task_name(lua_State *L, int idx) { push_name(L, idx); }

void lunio__set_task_name(lua_State *L, int task, int name) {
  task = lua_absindex(L, task);
  name = lua_absindex(L, name);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &names_key);
  lua_pushvalue(L, task);
  lua_pushvalue(L, name);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

void lunio__push_task_origin(lua_State *L, int idx) { push_origin(L, idx); }

void lunio__open_sched(lua_State *L) {
  lunio__new_weak_table(L); /* task names */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &names_key);
}

/* set_exception_handler(fn|nil): the handler of every loop that has none */
int lunio__set_global_handler(lua_State *L) {
  if (!lua_isnil(L, 1))
    lunio__check_callable(L, 1);
  lua_settop(L, 1);
  push_state(L);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "handler");
  return 0;
}

/* ---- ticks ------------------------------------------------------------- */

static void run_uv(lunio_loop *loop, uv_run_mode mode) {
  loop->in_uv = 1;
  uv_run(&loop->uv, mode);
  loop->in_uv = 0;
}

/* Whether anything can still wake a task: a finite deadline, I/O in
 * flight, or a libuv handle or request that keeps the loop alive. */
static int can_wake(lunio_loop *loop) {
  lunio_task *first = lunio__heap_peek(&loop->heap);
  if (first != NULL && first->u.when < HUGE_VAL)
    return 1;
  return loop->io_pending > 0 || uv_loop_alive(&loop->uv);
}

/* ---- deferred calls ---------------------------------------------------- */

void lunio__defer(lunio_loop *loop, lunio_deferred *d) {
  if (d->queued)
    return;
  d->queued = 1;
  d->next = NULL;
  d->prev = loop->deferred_tail;
  if (loop->deferred_tail != NULL)
    loop->deferred_tail->next = d;
  else
    loop->deferred = d;
  loop->deferred_tail = d;
  loop->events |= LUNIO_EV_DEFERRED;
  if (loop->in_uv) /* as lunio__ready_push: do not block in poll now */
    uv_stop(&loop->uv);
}

void lunio__defer_cancel(lunio_loop *loop, lunio_deferred *d) {
  if (!d->queued)
    return;
  d->queued = 0;
  if (d->prev != NULL)
    d->prev->next = d->next;
  else
    loop->deferred = d->next;
  if (d->next != NULL)
    d->next->prev = d->prev;
  else
    loop->deferred_tail = d->prev;
  d->next = d->prev = NULL;
}

/* Runs the calls queued when it starts (one queued again meanwhile waits
 * for the next round, so a call cannot keep the tick busy). */
static void run_deferred(lua_State *L, lunio_loop *loop) {
  lunio_deferred *d;
  int n = 0;
  for (d = loop->deferred; d != NULL; d = d->next)
    n++;
  while (n-- > 0 && (d = loop->deferred) != NULL) {
    lunio__defer_cancel(loop, d);
    d->fn(L, loop, d);
  }
  if (loop->deferred != NULL)
    loop->events |= LUNIO_EV_DEFERRED;
}

/* Acts on what libuv callbacks and the SIGINT handler noticed. */
static void process_events(lua_State *L, lunio_loop *loop) {
  int ev = loop->events;
  loop->events = 0;
  if (loop->sigint_count != loop->sigint_seen) {
    sig_atomic_t n = loop->sigint_count;
    /* First SIGINT: cancel the main task (it finishes its cleanup). A
     * second one abandons run() (loop.c's handler also interrupted a task
     * busy in Lua code). */
    if (loop->sigint_seen == 0 && loop->main && !LUNIO_IS_DONE(loop->main)) {
      lunio__push_anchored(L, loop, loop->main);
      lunio__error_new(L, "cancelled", "interrupted by SIGINT");
      lunio__cancel(L, -2);
      lua_pop(L, 1);
    }
    if (n >= 2)
      loop->stopping = 1;
    loop->interrupted = 1;
    while (loop->sigint_seen < n) {
      loop->sigint_seen++;
      if (loop->sigint_observer != NULL)
        loop->sigint_observer(L, loop, loop->sigint_observer_data);
    }
  }
  if (ev & LUNIO_EV_WATCHDOG) {
    lunio__push_loop_field(L, loop, LUNIO_LT_WATCHDOG);
    if (!lua_isnil(L, -1))
      lunio__call_soon(L, loop, 0);
    else
      lua_pop(L, 1);
  }
  if (ev & LUNIO_EV_ABORT)
    loop->stopping = 1;
  if (ev & LUNIO_EV_DEFERRED)
    run_deferred(L, loop);
}

/* One scheduler tick: step what is ready, then one libuv pass. Returns 1
 * when the loop is deadlocked: nothing is ready and nothing can ever wake
 * a task (the caller decides what to do). */
static int tick(lua_State *L, lunio_loop *loop) {
  int waiting;
  /* Only what was ready when the tick began runs in it: work readied
   * during the tick waits for the next one, after a pass of libuv. */
  loop->budget = loop->ready_len;
  while (loop->budget > 0) {
    lunio_task *t = loop->ready[loop->ready_head];
    if (t->kind == LUNIO_KIND_TASK && t->state == LUNIO_NEW)
      run_new(L, loop); /* starts this one and the new ones after */
    else {
      ready_pop(loop);
      loop->budget--;
      if (t->kind == LUNIO_KIND_HANDLE)
        run_handle(L, loop, t);
      else
        step(L, loop, t);
    }
    if (loop->gc_stress)
      lua_gc(L, LUA_GCSTEP, 0);
  }
  if (loop->events || loop->sigint_count != loop->sigint_seen)
    process_events(L, loop);
  if (loop->ready_len > 0) {
    /* More work is ready: poll libuv only now and then. */
    if (++loop->ticks >= POLL_EVERY) {
      loop->ticks = 0;
      arm_timer(loop);
      run_uv(loop, UV_RUN_NOWAIT);
    }
    run_timers(loop);
    return 0;
  }
  loop->ticks = 0;
  /* Nothing ready: block in libuv until something happens, if someone
   * still waits (the main task, or while draining any pending task). */
  waiting = !loop->stopping &&
            (loop->main ? !LUNIO_IS_DONE(loop->main) : loop->npending > 0);
  if (loop->virtual_time && loop->io_pending == 0 &&
      loop->uv.active_reqs.count == 0) {
    /* The virtual clock stands still: deadlines come only by jumps. */
    lunio_task *first = lunio__heap_peek(&loop->heap);
    uv_timer_stop(&loop->timer);
    loop->armed = -1;
    if (first != NULL && first->u.when < HUGE_VAL) {
      /* Autojump: everything waits on time only, skip to the deadline. */
      if (first->u.when > loop->vt_offset)
        loop->vt_offset = first->u.when;
      run_uv(loop, UV_RUN_NOWAIT);
      run_timers(loop);
      return 0;
    }
  } else
    arm_timer(loop);
  if (waiting && !can_wake(loop))
    return 1;
  run_uv(loop, waiting ? UV_RUN_ONCE : UV_RUN_NOWAIT);
  run_timers(loop);
  if (loop->events || loop->sigint_count != loop->sigint_seen)
    process_events(L, loop);
  return 0;
}

int lunio__has_tasks(lunio_loop *loop) {
  return loop->npending > 0 || loop->ready_len > 0;
}

/* Cancels every pending task (and scheduled handle). */
static void cancel_all(lua_State *L, lunio_loop *loop) {
  uint32_t i, n = loop->npending;
  int list;
  lua_createtable(L, (int)n, 0);
  list = lua_gettop(L);
  lunio__push_loop_table(L, loop);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, list, i);
  }
  lua_pop(L, 1);
  for (i = 1; i <= n; i++) {
    lunio_task *t;
    lua_rawgeti(L, list, i);
    t = lua_touserdata(L, -1);
    if (t->kind == LUNIO_KIND_HANDLE)
      lunio__handle_cancel(L, t);
    else {
      lunio__error_new(L, "cancelled", "the loop is shutting down");
      lunio__cancel(L, -2);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* Pushes the error for a deadlock: every task waits, nothing can wake. */
static void push_deadlock(lua_State *L, lunio_loop *loop) {
  lunio__error_new(L, "deadlock",
                   "every task is waiting and nothing can wake them (%d "
                   "pending; no timer, I/O or handle is active)",
                   (int)loop->npending);
}

void lunio__drive(lua_State *L, lunio_loop *loop, lunio_task *main) {
  int deadlocks = 0;
  while (main && !LUNIO_IS_DONE(main) && !loop->stopping) {
    if (!tick(L, loop))
      continue;
    /* Deadlocked: cancel the main task with an error that says so (its
     * cleanup runs, and the cancel reaches whatever it awaits). If it
     * swallows that and waits again, give up on it. */
    if (deadlocks++ > 0) {
      loop->stopping = 1;
      push_deadlock(L, loop);
      lua_error(L);
    }
    lunio__push_anchored(L, loop, main);
    push_deadlock(L, loop);
    lunio__cancel(L, -2);
    lua_pop(L, 1);
  }
  if (loop->stopping && !(main && LUNIO_IS_DONE(main)))
    return; /* stop() before the main task finished: keep the rest */
  loop->stopping = 0;
  if (main) /* run() hands its error to the caller */
    main->flags |= LUNIO_F_RETRIEVED;
  loop->main = NULL;
  cancel_all(L, loop);
  while (lunio__has_tasks(loop) && !loop->stopping)
    if (tick(L, loop))
      break; /* tasks that swallowed the shutdown and wait for ever */
  loop->stopping = 0;
  lunio__report_unretrieved(L, loop);
}

/* ---- teardown ---------------------------------------------------------- */

/* Marks the task/future/handle at the top of L done (cancelled) without
 * running anything, and detaches it from its loop. */
static void settle_top(lua_State *L, lunio_loop *loop) {
  lunio_task *t = lua_touserdata(L, -1);
  if (t->state == LUNIO_SUSPENDED && t->wait == LUNIO_WAIT_IO)
    t->u.io.fn(t, t->u.io.data); /* detach it from its I/O */
  lunio__heap_remove(&loop->heap, t);
  t->slot = 0;
  t->co = NULL;
  t->wait = LUNIO_WAIT_NONE;
  t->waiter = 0;
  t->state = LUNIO_DONE_CANCELLED;
  t->flags |= LUNIO_F_RETRIEVED;
  t->flags &= ~(LUNIO_F_MULTI | LUNIO_F_NORESULT | LUNIO_F_MUST_CANCEL |
                LUNIO_F_HAS_WAITERS | LUNIO_F_FUTURE_LISTED);
  t->loop = NULL;
  lunio__error_new(L, "cancelled", "the loop was closed");
  lua_setiuservalue(L, -2, 1);
}

void lunio__settle_all(lua_State *L, lunio_loop *loop) {
  uint32_t i;
  lunio__push_loop_table(L, loop);
  for (i = loop->npending; i >= 1; i--) {
    lua_rawgeti(L, -1, i);
    settle_top(L, loop);
    lua_pop(L, 1);
  }
  loop->npending = 0;
  loop->ready_len = 0;
  lua_rawgeti(L, -1, LUNIO_LT_FUTURES);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    settle_top(L, loop);
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
}

void lunio__sched_free(lunio_loop *loop) {
  free(loop->ready);
  loop->ready = NULL;
  loop->ready_cap = loop->ready_len = 0;
  lunio__heap_free(&loop->heap);
}
