/*
 * loop.c - the scheduler: Loop objects, the ready queue, timers, run().
 *
 * A Loop (userdata "lunio.Loop") owns a uv_loop_t, one uv_timer_t armed at
 * the earliest deadline of its timer heap, and a FIFO ring of tasks and
 * handles ready to step. run() alternates between stepping everything that
 * was ready when the tick began and one pass of libuv (non-blocking when work
 * is ready, blocking otherwise), so tasks woken during a tick run on the next
 * one, in wake-up order.
 *
 * Lifetime: pending tasks and scheduled handles are anchored in the loop's
 * pending array (registry ref), so nobody needs to hold them. A loop is torn
 * down by close() or by __gc: libuv handles are closed and the loop is run
 * until their close callbacks fired, then uv_loop_close frees it.
 *
 * Module state (the default loop, the running loop) is a registry table keyed
 * by the address of state_key: nothing is shared between Lua states.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char state_key = 'S';
/* Registry slot holding the running Loop userdata (nil when none runs):
 * one raw lookup for lunio__running_loop, which every await takes. */
static const char running_key = 'R';

/* ---- module state ---------------------------------------------------- */

static void push_state(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &state_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &state_key);
  }
}

/* Pushes state[field] (a Loop userdata or nil); returns its struct. */
static lunio_loop *push_state_loop(lua_State *L, const char *field) {
  lunio_loop *loop;
  push_state(L);
  lua_getfield(L, -1, field);
  lua_remove(L, -2);
  loop = lua_touserdata(L, -1);
  return loop;
}

lunio_loop *lunio__running_loop(lua_State *L) {
  lunio_loop *loop;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &running_key);
  loop = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return loop;
}

lunio_task *lunio__task_of(lua_State *L) {
  lunio_task *t = LUNIO_TASK_OF(L);
  lunio_loop *loop;
  if (t == NULL)
    return NULL;
  loop = lunio__running_loop(L);
  return loop != NULL && loop->current == t ? t : NULL;
}

static lunio_loop *new_loop(lua_State *L);

/* Pushes the default loop, creating it when missing or closed. */
static lunio_loop *push_default_loop(lua_State *L) {
  lunio_loop *loop = push_state_loop(L, "default");
  if (loop == NULL || loop->closed) {
    lua_pop(L, 1);
    loop = new_loop(L);
    push_state(L);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "default");
    lua_pop(L, 1);
  }
  return loop;
}

lunio_loop *lunio__default_loop(lua_State *L) {
  lunio_loop *loop = push_default_loop(L);
  lua_pop(L, 1);
  return loop;
}

/* ---- small accessors --------------------------------------------------- */

uv_loop_t *lunio__uv(lunio_loop *loop) { return &loop->uv; }
lua_State *lunio__loop_state(lunio_loop *loop) { return loop->L; }
void **lunio__http_slot(lunio_loop *loop) { return &loop->http; }
void lunio__io_begin(lunio_loop *loop) {
  if (loop->io_pending++ == 0)
    loop->vt_io_start = (double)uv_hrtime() / 1e9;
}

void lunio__io_end(lunio_loop *loop) {
  if (--loop->io_pending == 0 && loop->virtual_time)
    loop->vt_offset += (double)uv_hrtime() / 1e9 - loop->vt_io_start;
}

double lunio__deadline(double now, double delay) {
  double when = now + delay;
  /* Rounding may land a hair early; a sleeper must see `delay` pass. */
  if (when - now < delay)
    when = nextafter(when, HUGE_VAL);
  return when;
}

double lunio__time(lunio_loop *loop) {
  /* Under virtual time the clock stands still between jumps, so tests see
   * exact times however slowly they run (valgrind, sanitizers); while I/O
   * is in flight it runs at the real rate, so timeouts around I/O work. */
  if (loop->virtual_time)
    return loop->vt_offset +
           (loop->io_pending > 0 ? (double)uv_hrtime() / 1e9 - loop->vt_io_start
                                 : 0);
  return (double)uv_hrtime() / 1e9 + loop->vt_offset;
}

/* ---- ready queue ------------------------------------------------------- */

void lunio__ready_push(lunio_loop *loop, lunio_task *t) {
  if (loop->ready_len == loop->ready_cap) {
    uint32_t cap = loop->ready_cap ? loop->ready_cap * 2 : 256, i;
    lunio_task **ring = malloc(cap * sizeof *ring);
    if (ring == NULL)
      abort(); /* cannot lose a wake-up; out of memory is fatal here */
    for (i = 0; i < loop->ready_len; i++)
      ring[i] = loop->ready[(loop->ready_head + i) % loop->ready_cap];
    free(loop->ready);
    loop->ready = ring;
    loop->ready_cap = cap;
    loop->ready_head = 0;
  }
  loop->ready[(loop->ready_head + loop->ready_len++) % loop->ready_cap] = t;
  /* Work is ready: if this runs inside uv_run (a timer or I/O callback),
   * make it return instead of blocking in poll. uv_run(ONCE) runs due
   * timers before it computes the poll timeout, so without this a wake-up
   * from a timer could be followed by an indefinite block. */
  if (loop->in_uv)
    uv_stop(&loop->uv);
}

lunio_task *lunio__ready_pop(lunio_loop *loop) {
  lunio_task *t = loop->ready[loop->ready_head];
  loop->ready_head = (loop->ready_head + 1) % loop->ready_cap;
  loop->ready_len--;
  return t;
}

/* ---- the pending array ------------------------------------------------- */

void lunio__anchor(lua_State *L, lunio_loop *loop, int idx, lunio_task *t) {
  idx = lua_absindex(L, idx);
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->pending_ref);
  lua_pushvalue(L, idx);
  lua_rawseti(L, -2, ++loop->npending);
  lua_pop(L, 1);
  t->slot = loop->npending;
}

void lunio__unanchor(lua_State *L, lunio_loop *loop, lunio_task *t) {
  uint32_t slot = t->slot;
  if (slot == 0)
    return;
  t->slot = 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->pending_ref);
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
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->pending_ref);
  lua_rawgeti(L, -1, t->slot);
  lua_remove(L, -2);
}

/* ---- exception handler ------------------------------------------------- */

static int default_handler(lua_State *L) {
  const char *msg, *err, *tb;
  lua_getfield(L, 1, "message");
  lua_getfield(L, 1, "error");
  lua_getfield(L, 1, "traceback");
  msg = lua_tostring(L, 2);
  err = luaL_tolstring(L, 3, NULL);
  tb = lua_tostring(L, 4);
  fprintf(stderr, "lunio: %s\n%s\n", msg ? msg : "error", err);
  if (tb && strstr(err, "stack traceback:") == NULL)
    fprintf(stderr, "%s\n", tb);
  fflush(stderr);
  return 0;
}

void lunio__report(lua_State *L, lunio_loop *loop) {
  int ctx = lua_absindex(L, -1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->handler_ref);
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
    fprintf(stderr, "lunio: error in exception handler: %s\n",
            luaL_tolstring(L, -1, NULL));
    lua_pop(L, 2);
  }
  lua_pop(L, 1); /* ctx */
}

static void new_weak_table(lua_State *L) {
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
}

/* Reports every failed task whose error nobody retrieved, once each. */
static void report_unretrieved(lua_State *L, lunio_loop *loop) {
  int i, n = 0, list;
  lua_newtable(L);
  list = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->failed_ref);
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
  while ((t = lunio__heap_peek(&loop->heap)) != NULL && t->when <= now) {
    lunio__heap_remove(&loop->heap, t);
    if (t->kind == LUNIO_KIND_HANDLE)
      lunio__ready_push(loop, t);
    else
      lunio__wake(loop->L, t, 0, 0);
  }
}

static void arm_timer(lunio_loop *loop);

static void on_timer(uv_timer_t *timer) {
  lunio_loop *loop = timer->data;
  loop->armed = -1;
  run_timers(loop);
  /* Re-arm for what is left: uv_run(ONCE) computes its poll timeout after
   * running timers, so an unarmed timer here would block indefinitely. */
  arm_timer(loop);
}

/* Arms the single uv timer at the earliest deadline, if it changed.
 * libuv counts from its cached loop time (whole milliseconds, possibly
 * stale), so the timeout is taken from that clock: the timer never fires
 * before the deadline and at most about a millisecond after it. */
static void arm_timer(lunio_loop *loop) {
  lunio_task *first = lunio__heap_peek(&loop->heap);
  double due_ms;
  if (first == NULL) {
    if (loop->armed >= 0) {
      uv_timer_stop(&loop->timer);
      loop->armed = -1;
    }
    return;
  }
  if (first->when == loop->armed)
    return;
  if (loop->virtual_time) /* only while I/O runs the clock at real speed */
    due_ms = (first->when - lunio__time(loop)) * 1000.0;
  else
    due_ms =
        (first->when - loop->vt_offset) * 1000.0 - (double)uv_now(&loop->uv);
  if (due_ms > 1e15) /* "forever" (math.huge): about 30,000 years */
    due_ms = 1e15;
  uv_timer_start(&loop->timer, on_timer,
                 due_ms <= 0 ? 0 : (uint64_t)ceil(due_ms), 0);
  loop->armed = first->when;
}

/* ---- handles (call_soon / call_later / call_at) ------------------------ */

static lunio_task *check_handle(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, LUNIO_HANDLE_MT);
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

void lunio__check_callable(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TFUNCTION)
    return;
  if (!luaL_getmetafield(L, idx, "__call"))
    luaL_typeerror(L, idx, "callable");
  lua_pop(L, 1);
}

/* Creates a handle for the callable at fn and the values above it; pushes
 * the handle. The callable and arguments are kept in its user value. */
static lunio_task *new_handle(lua_State *L, lunio_loop *loop, int fn) {
  int nargs = lua_gettop(L) - fn;
  lunio_task *h = lua_newuserdatauv(L, sizeof *h, 1);
  memset(h, 0, sizeof *h);
  h->loop = loop;
  h->kind = LUNIO_KIND_HANDLE;
  h->state = LUNIO_NEW;
  h->id = ++loop->next_id;
  luaL_setmetatable(L, LUNIO_HANDLE_MT);
  if (nargs == 0)
    lua_pushvalue(L, fn);
  else {
    int i;
    lua_createtable(L, nargs + 1, 1);
    for (i = 0; i <= nargs; i++) {
      lua_pushvalue(L, fn + i);
      lua_rawseti(L, -2, i + 1);
    }
    lua_pushinteger(L, nargs + 1);
    lua_setfield(L, -2, "n");
    h->flags |= LUNIO_F_MULTI;
  }
  lua_setiuservalue(L, -2, 1);
  lunio__anchor(L, loop, -1, h);
  return h;
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

void lunio__call_soon(lua_State *L, lunio_loop *loop, int nargs) {
  int fn = lua_gettop(L) - nargs;
  lunio_task *h = new_handle(L, loop, fn);
  lunio__ready_push(loop, h);
  lua_settop(L, fn - 1);
}

static int handle_cancel(lua_State *L) {
  lunio_task *h = check_handle(L, 1);
  if (h->state != LUNIO_NEW || (h->flags & LUNIO_F_HANDLE_CANCELLED)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  h->flags |= LUNIO_F_HANDLE_CANCELLED;
  if (h->heap_idx) { /* not in the ready ring: release it now */
    lunio__heap_remove(&h->loop->heap, h);
    lunio__unanchor(L, h->loop, h);
    h->state = LUNIO_DONE_CANCELLED;
  }
  lua_pushboolean(L, 1);
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
    lua_pushnumber(L, h->when);
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

/* ---- Loop objects ------------------------------------------------------ */

static lunio_loop *check_loop(lua_State *L, int idx) {
  lunio_loop *loop = luaL_checkudata(L, idx, LUNIO_LOOP_MT);
  if (loop->closed)
    lunio__error_raise(L, "closed", "the loop is closed");
  return loop;
}

static void on_sigint(uv_signal_t *sig, int signum) {
  lunio_loop *loop = sig->data;
  (void)signum;
  /* Stop watching: libuv restores the default action, so a second ^C
   * kills a program whose main task refuses to finish. */
  uv_signal_stop(sig);
  loop->interrupted = 1;
  if (loop->main && !LUNIO_IS_DONE(loop->main)) {
    lua_State *L = loop->L;
    lunio__push_anchored(L, loop, loop->main);
    lunio__error_new(L, "cancelled", "interrupted by SIGINT");
    lunio__cancel(L, -2);
    lua_pop(L, 1);
  }
}

static lunio_loop *new_loop(lua_State *L) {
  lunio_loop *loop = lua_newuserdatauv(L, sizeof *loop, 0);
  const char *stress = getenv("LUNIO_GC_STRESS");
  int rc;
  memset(loop, 0, sizeof *loop);
  loop->pending_ref = loop->waiters_ref = loop->failed_ref = LUA_NOREF;
  loop->pool_ref = loop->cancels_ref = loop->handler_ref = LUA_NOREF;
  loop->watchdog_ref = LUA_NOREF;
  loop->closed = 1; /* until fully initialised: __gc must not touch it */
  luaL_setmetatable(L, LUNIO_LOOP_MT);
  rc = uv_loop_init(&loop->uv);
  if (rc != 0)
    luaL_error(L, "cannot create a loop: %s", uv_strerror(rc));
  uv_timer_init(&loop->uv, &loop->timer);
  loop->timer.data = loop;
  loop->uv.data = loop;
  uv_timer_init(&loop->uv, &loop->watchdog);
  loop->watchdog.data = loop;
  uv_unref((uv_handle_t *)&loop->watchdog);
  uv_signal_init(&loop->uv, &loop->sigint);
  loop->sigint.data = loop;
  loop->armed = -1;
  loop->signals = 1;
  loop->gc_stress = stress != NULL && *stress != '\0' && *stress != '0';
  lua_newtable(L);
  loop->pending_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  loop->waiters_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  new_weak_table(L);
  loop->failed_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  loop->pool_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  loop->cancels_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  loop->closed = 0;
  return loop;
}

static void run_uv(lunio_loop *loop, uv_run_mode mode) {
  loop->in_uv = 1;
  uv_run(&loop->uv, mode);
  loop->in_uv = 0;
}

/* One scheduler tick: step what is ready, then one libuv pass. */
static void tick(lua_State *L, lunio_loop *loop) {
  /* Only what was ready when the tick began runs in it: work readied
   * during the tick waits for the next one, after a pass of libuv. */
  loop->budget = loop->ready_len;
  while (loop->budget > 0) {
    lunio_task *t = loop->ready[loop->ready_head];
    if (t->kind == LUNIO_KIND_TASK && t->state == LUNIO_NEW)
      lunio__run_new(L, loop); /* starts this one and the new ones after */
    else {
      lunio__ready_pop(loop);
      loop->budget--;
      if (t->kind == LUNIO_KIND_HANDLE)
        run_handle(L, loop, t);
      else
        lunio__step(L, loop, t);
    }
    if (loop->gc_stress)
      lua_gc(L, LUA_GCSTEP, 0);
  }
  if (loop->ready_len == 0 && loop->virtual_time && loop->heap.len &&
      loop->io_pending == 0 && loop->uv.active_reqs.count == 0) {
    /* Autojump: everything waits on time only, so skip to the deadline. */
    double when = lunio__heap_peek(&loop->heap)->when;
    if (when > loop->vt_offset)
      loop->vt_offset = when;
    run_uv(loop, UV_RUN_NOWAIT);
  } else {
    /* Block in libuv only when nothing is ready and someone still waits:
     * the main task, or (while draining) any pending task. */
    int block = loop->ready_len == 0 && !loop->stopping &&
                (loop->main ? !LUNIO_IS_DONE(loop->main) : loop->npending > 0);
    if (loop->virtual_time && loop->io_pending == 0) {
      /* The virtual clock stands still: deadlines come only by jumps. */
      uv_timer_stop(&loop->timer);
      loop->armed = -1;
    } else
      arm_timer(loop);
    run_uv(loop, block ? UV_RUN_ONCE : UV_RUN_NOWAIT);
  }
  run_timers(loop);
}

/* Cancels every pending task (and scheduled handle) and runs the loop until
 * the tasks finished their cleanup. */
static void cancel_all(lua_State *L, lunio_loop *loop) {
  uint32_t i, n = loop->npending;
  int list;
  lua_createtable(L, (int)n, 0);
  list = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->pending_ref);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, list, i);
  }
  lua_pop(L, 1);
  for (i = 1; i <= n; i++) {
    lunio_task *t;
    lua_rawgeti(L, list, i);
    t = lua_touserdata(L, -1);
    if (t->kind == LUNIO_KIND_HANDLE) {
      lua_pushcfunction(L, handle_cancel);
      lua_insert(L, -2);
      lua_call(L, 1, 0);
    } else {
      lunio__error_new(L, "cancelled", "the loop is shutting down");
      lunio__cancel(L, -2);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
}

static int has_tasks(lunio_loop *loop) {
  return loop->npending > 0 || loop->ready_len > 0;
}

typedef struct run_state {
  lunio_loop *loop;
  lunio_task *main;
} run_state;

/* Drives the loop until the main task is done, then drains the rest.
 * Runs under lua_pcall so a failure cannot leave the loop marked running. */
static int drive(lua_State *L) {
  run_state *rs = lua_touserdata(L, 1);
  lunio_loop *loop = rs->loop;
  while (rs->main && !LUNIO_IS_DONE(rs->main) && !loop->stopping)
    tick(L, loop);
  if (loop->stopping && !(rs->main && LUNIO_IS_DONE(rs->main)))
    return 0; /* stop() before the main task finished: keep the rest */
  loop->stopping = 0;
  if (rs->main) /* run() hands its error to the caller */
    rs->main->flags |= LUNIO_F_RETRIEVED;
  loop->main = NULL;
  cancel_all(L, loop);
  while (has_tasks(loop))
    tick(L, loop);
  report_unretrieved(L, loop);
  return 0;
}

static void enter(lua_State *L, lunio_loop *loop, int ud) {
  if (lunio__running_loop(L) != NULL)
    luaL_error(L, "cannot run a loop: a loop is already running");
  lua_pushvalue(L, ud);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &running_key);
  loop->L = L;
  loop->running = 1;
  loop->stopping = 0;
  loop->interrupted = 0;
  if (loop->signals)
    uv_signal_start(&loop->sigint, on_sigint, SIGINT);
}

static void leave(lua_State *L, lunio_loop *loop) {
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &running_key);
  uv_signal_stop(&loop->sigint);
  loop->running = 0;
  loop->stopping = 0;
  loop->main = NULL;
}

/* loop:run(fn, ...) -> results of fn */
static int loop_run(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  int nargs = lua_gettop(L) - 2, main_idx, rc;
  run_state rs;
  lunio_task *main;
  lunio__check_callable(L, 2);
  if (lunio__running_loop(L) != NULL)
    return luaL_error(L, "cannot run a loop: a loop is already running");
  main = lunio__spawn(L, loop, nargs);
  main_idx = lua_gettop(L);
  enter(L, loop, 1);
  loop->main = main;
  rs.loop = loop;
  rs.main = main;
  lua_pushcfunction(L, drive);
  lua_pushlightuserdata(L, &rs);
  rc = lua_pcall(L, 1, 0, 0);
  leave(L, loop);
  if (rc != LUA_OK)
    return lua_error(L);
  if (!LUNIO_IS_DONE(main))
    return lunio__error_raise(L, "invalid_state",
                              "the loop stopped before the main task finished");
  if (loop->interrupted && main->state == LUNIO_DONE_CANCELLED)
    return lunio__error_raise(L, "interrupted", "interrupted by SIGINT");
  main->flags |= LUNIO_F_RETRIEVED;
  lua_settop(L, main_idx);
  return lunio__push_results(L, main_idx);
}

/* Closes libuv handles and frees everything C-side; tasks still pending
 * are marked cancelled without running (used by close() after draining and
 * by __gc). */
static void teardown(lua_State *L, lunio_loop *loop) {
  uint32_t i;
  if (loop->closed)
    return;
  loop->closing = 1;
  loop->L = L;
  report_unretrieved(L, loop);
  lunio__http_loop_close(loop);
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->pending_ref);
  for (i = loop->npending; i >= 1; i--) {
    lunio_task *t;
    lua_rawgeti(L, -1, i);
    t = lua_touserdata(L, -1);
    lunio__heap_remove(&loop->heap, t);
    t->slot = 0;
    t->co = NULL;
    t->state = LUNIO_DONE_CANCELLED;
    t->flags |= LUNIO_F_RETRIEVED;
    lunio__error_new(L, "cancelled", "the loop was closed");
    lua_setiuservalue(L, -2, 1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  loop->npending = 0;
  loop->ready_len = 0;
  uv_close((uv_handle_t *)&loop->timer, NULL);
  uv_close((uv_handle_t *)&loop->sigint, NULL);
  uv_close((uv_handle_t *)&loop->watchdog, NULL);
  uv_run(&loop->uv, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop->uv) != 0) {
    /* Someone left a handle open: run once more, then give up loudly. */
    uv_run(&loop->uv, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop->uv) != 0)
      fprintf(stderr, "lunio: loop closed with libuv handles still open\n");
  }
  free(loop->ready);
  loop->ready = NULL;
  lunio__heap_free(&loop->heap);
  luaL_unref(L, LUA_REGISTRYINDEX, loop->pending_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, loop->waiters_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, loop->failed_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, loop->pool_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, loop->cancels_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, loop->handler_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, loop->watchdog_ref);
  loop->closed = 1;
}

/* loop:close(): cancels pending tasks, lets them clean up, frees the loop. */
static int loop_close(lua_State *L) {
  lunio_loop *loop = luaL_checkudata(L, 1, LUNIO_LOOP_MT);
  if (loop->closed)
    return 0;
  if (loop->running)
    return luaL_error(L, "cannot close a running loop");
  if (has_tasks(loop) && lunio__running_loop(L) == NULL) {
    int rc;
    run_state rs = {loop, NULL};
    enter(L, loop, 1);
    cancel_all(L, loop);
    lua_pushcfunction(L, drive);
    lua_pushlightuserdata(L, &rs);
    /* drive() with no main task: only the draining part runs */
    rc = lua_pcall(L, 1, 0, 0);
    leave(L, loop);
    if (rc != LUA_OK)
      return lua_error(L);
  }
  teardown(L, loop);
  return 0;
}

static int loop_gc(lua_State *L) {
  lunio_loop *loop = lua_touserdata(L, 1);
  teardown(L, loop);
  return 0;
}

static int loop_time(lua_State *L) {
  lua_pushnumber(L, lunio__time(check_loop(L, 1)));
  return 1;
}

static int loop_call_soon(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  lunio_task *h;
  lunio__check_callable(L, 2);
  h = new_handle(L, loop, 2);
  lunio__ready_push(loop, h);
  return 1;
}

static int schedule_at(lua_State *L, lunio_loop *loop, double when) {
  lunio_task *h;
  lunio__check_callable(L, 3);
  h = new_handle(L, loop, 3);
  h->when = when;
  if (lunio__heap_push(&loop->heap, h) != 0) {
    lunio__unanchor(L, loop, h);
    return luaL_error(L, "not enough memory");
  }
  return 1;
}

static int loop_call_later(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  double delay = luaL_checknumber(L, 2);
  luaL_argcheck(L, delay == delay, 2, "delay is NaN");
  return schedule_at(L, loop,
                     lunio__deadline(lunio__time(loop), delay > 0 ? delay : 0));
}

static int loop_call_at(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  double when = luaL_checknumber(L, 2);
  luaL_argcheck(L, when == when, 2, "time is NaN");
  return schedule_at(L, loop, when);
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
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->pending_ref);
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
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->pending_ref);
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
  if ((void *)h == (void *)&loop->timer || (void *)h == (void *)&loop->sigint ||
      (void *)h == (void *)&loop->watchdog)
    return;
  if (!uv_is_closing(h) && uv_is_active(h))
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

static int loop_set_exception_handler(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  if (!lua_isnil(L, 2))
    lunio__check_callable(L, 2);
  lua_settop(L, 2);
  luaL_unref(L, LUA_REGISTRYINDEX, loop->handler_ref);
  loop->handler_ref =
      lua_isnil(L, 2) ? LUA_NOREF : luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static void on_watchdog(uv_timer_t *timer) {
  lunio_loop *loop = timer->data;
  lua_State *L = loop->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->watchdog_ref);
  lunio__call_soon(L, loop, 0);
}

/* loop:set_watchdog(seconds, fn | nil): call fn (soon, outside tasks) after
 * `seconds` of real time, whatever the loop's clock does. Used by the
 * testing helper, whose time limit must hold under virtual time too. */
static int loop_set_watchdog(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  uv_timer_stop(&loop->watchdog);
  luaL_unref(L, LUA_REGISTRYINDEX, loop->watchdog_ref);
  loop->watchdog_ref = LUA_NOREF;
  if (lua_isnoneornil(L, 3))
    return 0;
  {
    double s = luaL_checknumber(L, 2);
    lunio__check_callable(L, 3);
    lua_settop(L, 3);
    loop->watchdog_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    uv_timer_start(&loop->watchdog, on_watchdog,
                   s > 0 ? (uint64_t)ceil(s * 1000.0) : 0, 0);
  }
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
  }
  return 0;
}

/* loop:set_signals(on): whether run() turns SIGINT into cancellation */
static int loop_set_signals(lua_State *L) {
  lunio_loop *loop = check_loop(L, 1);
  loop->signals = lua_toboolean(L, 2);
  return 0;
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
  lua_rawgetp(L, LUA_REGISTRYINDEX, &running_key);
  return 1;
}

/* set_exception_handler(fn|nil): the handler of every loop that has none */
static int core_set_exception_handler(lua_State *L) {
  if (!lua_isnil(L, 1))
    lunio__check_callable(L, 1);
  lua_settop(L, 1);
  push_state(L);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "handler");
  return 0;
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
      {"close", loop_close},
      {"all_tasks", loop_all_tasks},
      {"scheduled_handles", loop_scheduled_handles},
      {"active_handles", loop_active_handles},
      {"set_exception_handler", loop_set_exception_handler},
      {"set_virtual_time", loop_set_virtual_time},
      {"set_watchdog", loop_set_watchdog},
      {"set_signals", loop_set_signals},
      {NULL, NULL}};
  static const luaL_Reg handle_methods[] = {{"cancel", handle_cancel},
                                            {"cancelled", handle_cancelled},
                                            {"when", handle_when},
                                            {NULL, NULL}};
  static const luaL_Reg funcs[] = {
      {"new_loop", core_new_loop},
      {"default_loop", core_default_loop},
      {"running_loop", core_running_loop},
      {"set_exception_handler", core_set_exception_handler},
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
