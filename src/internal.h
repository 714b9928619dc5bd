/*
 * internal.h - declarations shared by the C files of lunio.core.
 *
 * Every cross-file helper is declared here once, with a one-line contract.
 * Nothing in here is exported from the shared object: the build uses
 * -fvisibility=hidden and only luaopen_lunio_core is marked LUNIO_API.
 */
#ifndef LUNIO_INTERNAL_H
#define LUNIO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#define LUNIO_API __attribute__((visibility("default")))
#define LUNIO_VERSION "0.1.0"

#define LUNIO_LOOP_MT "lunio.Loop"
#define LUNIO_TASK_MT "lunio.Task"
#define LUNIO_FAILED_TASK_MT "lunio.Task.failed"
#define LUNIO_FUTURE_MT "lunio.Future"
#define LUNIO_HANDLE_MT "lunio.Handle"
#define LUNIO_ERROR_MT "lunio.Error"

typedef struct lunio_loop lunio_loop;
typedef struct lunio_task lunio_task;

typedef struct lunio_heap {
  lunio_task **items;
  uint32_t len, cap;
} lunio_heap;

/* What a lunio_task struct stands for; all three share one layout. */
enum { LUNIO_KIND_TASK, LUNIO_KIND_FUTURE, LUNIO_KIND_HANDLE };

/* Life cycle of tasks, futures and handles. */
enum {
  LUNIO_NEW,       /* task or handle queued, body not started yet */
  LUNIO_READY,     /* suspended task woken, waiting in the ready queue */
  LUNIO_RUNNING,   /* its coroutine is executing */
  LUNIO_SUSPENDED, /* parked at an await point */
  LUNIO_PENDING,   /* future not yet resolved */
  LUNIO_DONE_OK,
  LUNIO_DONE_ERROR,
  LUNIO_DONE_CANCELLED
};

#define LUNIO_IS_DONE(t) ((t)->state >= LUNIO_DONE_OK)

/* Bits of lunio_task.flags. */
enum {
  LUNIO_F_MUST_CANCEL = 1 << 0,      /* deliver cancellation at an await */
  LUNIO_F_WAKE_ERROR = 1 << 1,       /* the pending wake value is an error */
  LUNIO_F_RETRIEVED = 1 << 2,        /* its error was seen by someone */
  LUNIO_F_HAS_WAITERS = 1 << 3,      /* it has an entry in loop's waiters */
  LUNIO_F_MULTI = 1 << 4,            /* user value is a table {..., n=} */
  LUNIO_F_HANDLE_CANCELLED = 1 << 5, /* handle: cancelled, skip when due */
  LUNIO_F_NORESULT = 1 << 6,         /* finished with zero results */
  LUNIO_F_LUAPARK = 1 << 7,          /* parked by core.park(): wakeable */
  LUNIO_F_DELEGATE = 1 << 8,         /* woken to pass a cancel on */
  LUNIO_F_DELEGATED = 1 << 9         /* passed its cancel to its target */
};

/*
 * Called when a task parked by lunio__park_c is cancelled (or its loop
 * closes): the owner must drop every pointer to the task and release its
 * own resources. The task is then resumed with the cancellation error.
 */
typedef void (*lunio_cancel_fn)(lunio_task *t, void *data);

struct lunio_task {
  lunio_loop *loop;
  lua_State *co;             /* the task's coroutine while it runs */
  lunio_task *awaiting;      /* task/future this one awaits (for cancel) */
  lunio_cancel_fn on_cancel; /* set while parked on C-level I/O */
  void *cancel_data;
  double when;       /* deadline while in the timer heap */
  uint32_t heap_idx; /* 1-based position in the timer heap, 0 = none */
  uint32_t slot;     /* 1-based position in the loop's pending array */
  uint32_t id;
  uint16_t nwake; /* values waiting on co's stack for the resume */
  uint8_t state;
  uint8_t kind;
  uint16_t flags;
};

/*
 * Per-loop state. The Lua side of a loop (tasks anchored while pending,
 * awaiters, the coroutine pool ...) lives in registry tables referenced by
 * the *_ref fields, so the scheduler reaches them without a lookup by name.
 */
struct lunio_loop {
  uv_loop_t uv;
  uv_timer_t timer;    /* armed at the earliest deadline of heap */
  uv_signal_t sigint;  /* SIGINT cancels the main task while running */
  uv_timer_t watchdog; /* real-time limit for tests (virtual time aware) */
  lua_State *L;        /* the thread that called run() */
  lunio_task **ready;  /* ring buffer of tasks/handles to step */
  uint32_t ready_head, ready_len, ready_cap;
  uint32_t budget; /* entries the current tick may still step */
  lunio_heap heap;
  lunio_task *current; /* task being stepped, or NULL */
  lunio_task *main;    /* main task of the current run() */
  double armed;        /* deadline the uv timer is armed for, or -1 */
  double vt_offset;    /* added to the monotonic clock; under virtual time,
                          the clock itself (see lunio__time) */
  double vt_io_start;  /* real time the current burst of I/O began */
  uint32_t npending;   /* entries in the pending array */
  uint32_t npool;      /* idle coroutines in the pool */
  uint32_t next_id;
  int io_pending; /* I/O in flight: virtual time must not jump */
  int pending_ref, waiters_ref, failed_ref, pool_ref, cancels_ref, handler_ref,
      watchdog_ref;
  unsigned running : 1, stopping : 1, closing : 1, closed : 1, awaited : 1,
      interrupted : 1, virtual_time : 1, gc_stress : 1, signals : 1, in_uv : 1;
  void *http; /* curl state of http.c, NULL until first use */
};

/* ---- loop.c ---------------------------------------------------------- */

/* The loop running in this Lua state, or NULL (one registry lookup). */
lunio_loop *lunio__running_loop(lua_State *L);
/* The default loop of this Lua state (created on first use). */
lunio_loop *lunio__default_loop(lua_State *L);
/* The libuv loop behind a lunio loop. */
uv_loop_t *lunio__uv(lunio_loop *loop);
/* Current loop time in seconds (virtual time aware). */
double lunio__time(lunio_loop *loop);
/* now + delay, rounded up so that (deadline - now) >= delay holds. */
double lunio__deadline(double now, double delay);
/* Raises a bad argument unless the value at idx is a function or has
 * __call. */
void lunio__check_callable(lua_State *L, int idx);
/* Pushes the values t[1..t.n] of the packed table at idx, removes the
 * table, and returns n (callables with arguments, multiple results). */
int lunio__unpack(lua_State *L, int idx);
/* Pop the ready queue's front (the queue must not be empty). */
lunio_task *lunio__ready_pop(lunio_loop *loop);
/* Append t to the ready queue (t must be anchored). */
void lunio__ready_push(lunio_loop *loop, lunio_task *t);
/* Schedule the callable below nargs values at the top as a handle (popped
 * with them); used for done callbacks. */
void lunio__call_soon(lua_State *L, lunio_loop *loop, int nargs);
/* Anchor the userdata at idx in the loop's pending array (strong ref). */
void lunio__anchor(lua_State *L, lunio_loop *loop, int idx, lunio_task *t);
/* Drop the anchor of t (no-op when not anchored). */
void lunio__unanchor(lua_State *L, lunio_loop *loop, lunio_task *t);
/* Push the userdata of an anchored t. */
void lunio__push_anchored(lua_State *L, lunio_loop *loop, lunio_task *t);
/* Run the loop's exception handler with the context table at the top. */
void lunio__report(lua_State *L, lunio_loop *loop);
/* Count of I/O operations in flight that virtual time must not skip. */
void lunio__io_begin(lunio_loop *loop);
void lunio__io_end(lunio_loop *loop);
/* The main lua_State the loop runs on (for pushing values from libuv
 * callbacks; never call Lua code from inside a libcurl callback). */
lua_State *lunio__loop_state(lunio_loop *loop);
/* Slot where http.c keeps the loop's curl state (NULL until first use). */
void **lunio__http_slot(lunio_loop *loop);
int luaopen_lunio_loop(lua_State *L); /* registers Loop/Handle types */

/* ---- timer.c: binary min-heap of tasks/handles keyed by .when -------- */

/* Insert t (t->when set); returns 0 or UV_ENOMEM. */
int lunio__heap_push(lunio_heap *h, lunio_task *t);
/* Remove t from wherever it sits; no-op when not in the heap. */
void lunio__heap_remove(lunio_heap *h, lunio_task *t);
/* Earliest entry or NULL. */
lunio_task *lunio__heap_peek(const lunio_heap *h);
void lunio__heap_free(lunio_heap *h);

/* ---- task.c ---------------------------------------------------------- */

/* Checks that arg is a Task or Future; raises a bad argument otherwise. */
lunio_task *lunio__check_awaitable(lua_State *L, int arg);
/* Create a task running the callable at fn_idx with nargs values above
 * it; pops them and pushes the Task. */
lunio_task *lunio__spawn(lua_State *L, lunio_loop *loop, int nargs);
/* Resume the woken task t; called by the loop. */
void lunio__step(lua_State *L, lunio_loop *loop, lunio_task *t);
/* Start the new tasks at the front of the ready queue (within the tick's
 * budget) in a runner coroutine; called by the loop. */
void lunio__run_new(lua_State *L, lunio_loop *loop);
/* Request cancellation of the task/future whose userdata is at idx, with
 * the error at the top (popped); returns 1 when taken, 0 when done. */
int lunio__cancel(lua_State *L, int idx);
/* Resolve t, whose userdata sits just below the n values at the top of L,
 * with those values (results, or one error value); pops all n + 1. */
void lunio__finish(lua_State *L, lunio_task *t, int state, int n);
/* Resume the parked t with the n values at the top of L (moved to t's
 * coroutine); error != 0 makes the await raise the single value. Callable
 * from libuv callbacks (L = lunio__loop_state) and from another task's C
 * function alike: it only schedules, the resume happens on a later tick. */
void lunio__wake(lua_State *L, lunio_task *t, int n, int error);
/* Suspend the running task (L is its coroutine) until lunio__wake; when
 * it is cancelled, on_cancel(t, data) runs first. k is resumed with the
 * woken values on top; it must call lunio__resumed first. When a
 * cancellation is already pending, calls on_cancel and raises at once. */
int lunio__park_c(lua_State *L, lunio_task *t, lunio_cancel_fn on_cancel,
                  void *data, lua_KContext ctx, lua_KFunction k);
/* In a continuation of lunio__park_c: raises the cancellation error when
 * the task was cancelled while parked (on_cancel ran) or after it was woken
 * (on_cancel did not run: release what the finished operation holds before
 * calling this). */
void lunio__resumed(lua_State *L, lunio_task *t);
/* The running task of L's loop, raising a clear error when L is not a
 * task's coroutine (main thread or a plain coroutine). */
lunio_task *lunio__check_in_task(lua_State *L, const char *fname);
/* Push the results of the done task at idx (raising its error); returns
 * their count. Marks the error retrieved. */
int lunio__push_results(lua_State *L, int idx);
/* Report the failed task at idx through the exception handler, once. */
void lunio__report_task(lua_State *L, lunio_loop *loop, int idx);
int luaopen_lunio_task(lua_State *L); /* registers Task/Future types */

/* ---- errors.c -------------------------------------------------------- */

/* Push a new lunio error table {kind=, message=}; returns its index. */
int lunio__error_new(lua_State *L, const char *kind, const char *fmt, ...);
/* Push and raise a new lunio error. */
int lunio__error_raise(lua_State *L, const char *kind, const char *fmt, ...);
/* Nonzero when the value at idx is a lunio error of the given kind. */
int lunio__is_error(lua_State *L, int idx, const char *kind);
int luaopen_lunio_errors(lua_State *L);

/* ---- coro.c ---------------------------------------------------------- */
/* The task a coroutine works for, kept in its LUA_EXTRASPACE (NULL in the
 * main thread and in plain coroutines). */
#define LUNIO_TASK_OF(co) (*(lunio_task **)lua_getextraspace(co))
/* The task L works for, validated: the extra space is trusted only when it
 * names the task the running loop is stepping (threads created before lunio
 * was loaded may hold garbage there). NULL outside tasks. */
lunio_task *lunio__task_of(lua_State *L);
void lunio__open_coroutine(lua_State *L); /* pushes the lunio.coroutine table */

/* ---- http.c ---------------------------------------------------------- */
void lunio__open_http(lua_State *L); /* pushes the core http table */
/* Loop teardown hook: aborts transfers and frees the loop's curl state.
 * Called with loop->L set, after pending tasks were cancelled and before
 * the final uv_run that waits for close callbacks. */
void lunio__http_loop_close(lunio_loop *loop);

#endif
