/*
 * internal.h - declarations shared by the C files of lunio.core.
 *
 * Every cross-file helper is declared here once, with a one-line contract.
 * Nothing in here is exported from the shared object: the build uses
 * -fvisibility=hidden and only luaopen_lunio_core is marked LUNIO_API.
 *
 * Layers (a file calls only into its own layer or the ones below it):
 *
 *   modules    http.c (over http_multi.c)  dns.c  stream.c  fs.c  thread.c
 *              signal.c  process.c (over stream.c's pipes, signal.c's names)
 *   I/O core   req.c       await one libuv request from a task
 *              buf.c       byte queues and a buffer pool
 *   Lua types  loop.c  task.c  coro.c
 *   scheduler  sched.c     ready ring, tick, park/wake/step, runners
 *              clock.c     time, virtual clock, timer heap
 *              resource.c  per-loop registry of open things, extensions
 *   base       errors.c    error objects, libuv error kinds
 *
 * core.c assembles the module on top of everything.
 */
#ifndef LUNIO_INTERNAL_H
#define LUNIO_INTERNAL_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#define LUNIO_API __attribute__((visibility("default")))
#define LUNIO_VERSION "0.1.0"

#define LUNIO_LOOP_MT "lunio.Loop"
#define LUNIO_TASK_MT "lunio.Task"
/* A failed task's watcher: its __gc reports an error never retrieved. */
#define LUNIO_TASK_WATCH_MT "lunio.Task.watch"
#define LUNIO_FUTURE_MT "lunio.Future"
#define LUNIO_HANDLE_MT "lunio.Handle"
#define LUNIO_ERROR_MT "lunio.Error"

/* Most values lunio__wake may hand to a task (nwake is 16 bits). */
#define LUNIO_MAX_WAKE 0xfff0

/* The struct of `type` whose member `field` is at p. */
#define container_of(p, type, field)                                           \
  ((type *)(void *)((char *)(p)-offsetof(type, field)))

typedef struct lunio_loop lunio_loop;
typedef struct lunio_task lunio_task;
typedef struct lunio_resource lunio_resource;
typedef struct lunio_ext lunio_ext;

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
  LUNIO_F_DELEGATED = 1 << 9,        /* passed its cancel to its target */
  LUNIO_F_FUTURE_LISTED = 1 << 10    /* future: in the loop's futures set */
};

/*
 * Called when a task parked by lunio__park_c is cancelled (or its loop
 * closes): the owner must drop every pointer to the task and release its
 * own resources. The task is then resumed with the cancellation error.
 */
typedef void (*lunio_cancel_fn)(lunio_task *t, void *data);

/* What a suspended task waits on (lunio_task.wait), which says which
 * member of lunio_task.u is in use. */
enum {
  LUNIO_WAIT_NONE,  /* nothing C knows about (core.park, sleep(0)) */
  LUNIO_WAIT_TIMER, /* u.when: in the timer heap */
  LUNIO_WAIT_TASK,  /* u.awaiting: awaiting a task or future */
  LUNIO_WAIT_IO     /* u.io: parked on C-level I/O by lunio__park_c */
};

/* Something other than a task that waits for tasks to finish (a Join).
 * lunio__finish calls done() in Lua context with the finished task's
 * userdata at index ud. */
typedef struct lunio_waiter lunio_waiter;
struct lunio_waiter {
  void (*done)(lua_State *L, lunio_waiter *w, lunio_task *t, int ud);
};

struct lunio_task {
  lunio_loop *loop; /* NULL once its loop was torn down (t is done then) */
  lua_State *co;    /* the task's coroutine while it runs */
  union {
    double when;          /* handles too: the deadline while in the heap */
    lua_Integer ival;     /* a new task's first argument (see spawn) */
    lunio_task *awaiting; /* LUNIO_WAIT_TASK */
    struct {
      lunio_cancel_fn fn; /* LUNIO_WAIT_IO: called when it is cancelled */
      void *data;
    } io;
  } u;
  /* Who waits for this one to finish, without a Lua table: a task (its
   * pointer), a lunio_waiter (pointer | 1), or nobody (0). Any further
   * waiter goes to the loop's waiters table (LUNIO_F_HAS_WAITERS). */
  uintptr_t waiter;
  uint32_t heap_idx; /* 1-based position in the timer heap, 0 = none */
  uint32_t slot;     /* 1-based position in the loop's pending array */
  uint32_t id;
  uint16_t nwake; /* values waiting on co's stack for the resume */
  uint16_t flags;
  uint8_t state;
  uint8_t kind;
  uint8_t wait; /* LUNIO_WAIT_* while suspended; a new task's first
                   argument kept in u instead of a user value (sched.c) */
};

/* Bits of lunio_loop.events: things noticed inside libuv callbacks (or a
 * signal handler) that the scheduler acts on between ticks, where Lua may
 * run and raise. */
enum {
  LUNIO_EV_WATCHDOG = 1 << 0, /* the watchdog timer fired */
  LUNIO_EV_ABORT = 1 << 1,    /* second SIGINT while idle: leave run() */
  LUNIO_EV_DEFERRED = 1 << 2  /* loop->deferred holds work (lunio__defer) */
};

/*
 * Work a module queues from a libuv callback, where no Lua may run, to be
 * done between ticks in Lua context (a server handing accepted
 * connections to Lua, a task spawned per signal delivery). Embedded in the
 * module's struct; queued at most once; see lunio__defer.
 */
typedef struct lunio_deferred lunio_deferred;
struct lunio_deferred {
  lunio_deferred *next, *prev;
  /* Runs on the loop's thread L (not inside a task); may raise only on
   * out of memory, which then ends run(). */
  void (*fn)(lua_State *L, lunio_loop *loop, lunio_deferred *d);
  int queued;
};

/*
 * Per-loop state. The Lua side of a loop (tasks anchored while pending,
 * waiters, the coroutine pool ...) lives in one state table that is the
 * Loop userdata's user value; C code that holds only this struct reaches it
 * through one registry reference the loop holds while it is open
 * (lunio__push_loop_table: an array lookup, on the scheduler's hot path).
 * Teardown detaches everything that could reach the loop, then drops the
 * reference and forgets the integer.
 */
struct lunio_loop {
  uv_loop_t uv;
  uv_timer_t timer;    /* armed at the earliest deadline of heap */
  uv_timer_t watchdog; /* real-time limit for tests (virtual time aware) */
  uv_async_t wakeup;   /* pokes a blocked uv_run from a signal handler */
  lua_State *L;        /* the thread that called run() */
  lunio_task **ready;  /* ring buffer of tasks/handles to step */
  uint32_t ready_head, ready_len, ready_cap;
  uint32_t budget; /* entries the current tick may still step */
  lunio_heap heap;
  lunio_task *current;       /* task being stepped, or NULL */
  lua_State *running_co;     /* the thread allowed to run for `current`: its
                                coroutine, or a lunio.coroutine it resumed */
  lunio_task *main;          /* main task of the current run() */
  lunio_resource *resources; /* open resources, newest first */
  lunio_ext *exts;           /* module extensions, newest first */
  double armed;              /* deadline the uv timer is armed for, or -1 */
  double vt_offset;   /* added to the monotonic clock; under virtual time,
                         the clock itself (see lunio__time) */
  double vt_io_start; /* real time the current burst of I/O began */
  double slow_step;   /* debug: warn about steps longer than this (s) */
  double step_start;  /* debug: loop time the current step began */
  int state_ref;      /* registry ref of the state table, or LUA_NOREF */
  int task_mt_ref;    /* registry ref of the Task metatable (for spawn) */
  uint32_t npending;  /* entries in the pending array */
  uint32_t npool;     /* idle coroutines in the pool */
  uint32_t next_id;
  uint32_t ticks; /* ticks since the last libuv poll */
  int io_pending; /* I/O in flight: virtual time must not jump */
  int events;     /* LUNIO_EV_* bits */
  /* Calls queued by lunio__defer, oldest first. */
  lunio_deferred *deferred, *deferred_tail;
  /* SIGINTs counted by the signal handler (it only ever increments) and
   * the count the scheduler has acted on. */
  volatile sig_atomic_t sigint_count;
  sig_atomic_t sigint_seen;
  /* Called (in Lua context, from the tick) for each SIGINT run() received,
   * after the main task was cancelled: lunio.signal's SIGINT watchers. */
  void (*sigint_observer)(lua_State *L, lunio_loop *loop, void *data);
  void *sigint_observer_data;
  /* The thread a second SIGINT hooked, and the hook it had before. */
  lua_State *hooked;
  lua_Hook saved_hook;
  int saved_mask, saved_count;
  unsigned running : 1, stopping : 1, closing : 1, closed : 1, awaited : 1,
      interrupted : 1, virtual_time : 1, gc_stress : 1, signals : 1, in_uv : 1,
      chain_yieldable : 1, debug : 1;
};

/* Keys of the loop's state table besides its array part (the pending
 * tasks and handles). Negative so that they live in the hash part. */
enum {
  LUNIO_LT_POOL = -1,     /* idle coroutines (array) */
  LUNIO_LT_WAITERS = -2,  /* task -> list of waiters (tasks, callbacks) */
  LUNIO_LT_FAILED = -3,   /* failed task -> its watcher (weak keys) */
  LUNIO_LT_CANCELS = -4,  /* task -> list of pending cancel errors */
  LUNIO_LT_HANDLER = -5,  /* the loop's exception handler */
  LUNIO_LT_WATCHDOG = -6, /* the watchdog callback */
  LUNIO_LT_FUTURES = -7   /* pending futures (weak keys) */
};

/* ---- errors.c -------------------------------------------------------- */

/* Push a new lunio error table {kind=, message=}; returns its index. */
int lunio__error_new(lua_State *L, const char *kind, const char *fmt, ...);
/* Push and raise a new lunio error. */
int lunio__error_raise(lua_State *L, const char *kind, const char *fmt, ...);
/* Push a lunio error for the libuv error code `status`: kind is the
 * error's name in lower case ("econnrefused"), message "what: strerror"
 * (what may be NULL), field `code` the libuv code. Returns its index. */
int lunio__uv_error_new(lua_State *L, int status, const char *what);
/* Push and raise lunio__uv_error_new(L, status, what). */
int lunio__uv_error_raise(lua_State *L, int status, const char *what);
/* Nonzero when the value at idx is a lunio error of the given kind. */
int lunio__is_error(lua_State *L, int idx, const char *kind);
int luaopen_lunio_errors(lua_State *L);

/* ---- clock.c: time and the timer heap -------------------------------- */

/* Current loop time in seconds (virtual time aware). */
double lunio__time(lunio_loop *loop);
/* now + delay, rounded up so that (deadline - now) >= delay holds. */
double lunio__deadline(double now, double delay);
/* Count of I/O operations in flight that virtual time must not skip. */
void lunio__io_begin(lunio_loop *loop);
void lunio__io_end(lunio_loop *loop);
/* Insert t (t->when set; t must not be in the heap); 0 or UV_ENOMEM. */
int lunio__heap_push(lunio_heap *h, lunio_task *t);
/* Remove t from wherever it sits; no-op when not in the heap. */
void lunio__heap_remove(lunio_heap *h, lunio_task *t);
/* Earliest entry or NULL. */
lunio_task *lunio__heap_peek(const lunio_heap *h);
void lunio__heap_free(lunio_heap *h);

/* ---- sched.c: the scheduler ------------------------------------------ */

/* The loop running in this Lua state, or NULL (one registry lookup). */
lunio_loop *lunio__running_loop(lua_State *L);
/* Push the running Loop userdata, or nil. */
void lunio__push_running_loop(lua_State *L);
/* Make `loop` (its userdata at idx) the running loop, or none (NULL). */
void lunio__set_running_loop(lua_State *L, lunio_loop *loop, int idx);
/* Push the state's running cell: a userdata holding the running loop's
 * pointer (NULL when none), for hot C functions to carry as an upvalue;
 * LUNIO_RUNNING_UP reads it there with no registry lookup. */
void lunio__push_running_cell(lua_State *L);
#define LUNIO_RUNNING_UP(L, i)                                                 \
  (*(lunio_loop **)lua_touserdata((L), lua_upvalueindex(i)))
/* Push the loop's state table (see LUNIO_LT_*); nil once torn down. */
void lunio__push_loop_table(lua_State *L, lunio_loop *loop);
/* Push state[key] of the loop's state table. */
void lunio__push_loop_field(lua_State *L, lunio_loop *loop, int key);
/* Raises a bad argument unless the value at idx is a function or has
 * __call. */
void lunio__check_callable(lua_State *L, int idx);
/* Pushes the values t[1..t.n] of the packed table at idx, removes the
 * table, and returns n (callables with arguments, multiple results). */
int lunio__unpack(lua_State *L, int idx);
/* Pushes a new table with weak keys. */
void lunio__new_weak_table(lua_State *L);
/* Pushes the weak-keyed table kept in the registry under key (made on
 * first use). */
void lunio__push_weak_table(lua_State *L, const void *key);
/* Append t to the ready queue (t must be anchored; never allocates). */
void lunio__ready_push(lunio_loop *loop, lunio_task *t);
/* Anchor the userdata at idx in the loop's pending array (strong ref).
 * Raises on out of memory, before anything changed. */
void lunio__anchor(lua_State *L, lunio_loop *loop, int idx, lunio_task *t);
/* Drop the anchor of t (no-op when not anchored). */
void lunio__unanchor(lua_State *L, lunio_loop *loop, lunio_task *t);
/* Push the userdata of an anchored t. */
void lunio__push_anchored(lua_State *L, lunio_loop *loop, lunio_task *t);
/* Creates a handle running the callable at fn with the values above it
 * (all popped) outside any task; pushes the handle. when < 0: soon (the
 * ready queue), else at loop time `when` (the timer heap). */
lunio_task *lunio__new_handle(lua_State *L, lunio_loop *loop, int fn,
                              double when);
/* Schedule the callable below nargs values at the top as a handle (popped
 * with them); used for done callbacks. */
void lunio__call_soon(lua_State *L, lunio_loop *loop, int nargs);
/* Cancel a scheduled handle; returns 0 when it already ran. */
int lunio__handle_cancel(lua_State *L, lunio_task *h);
/* Run the loop's exception handler with the context table at the top
 * (popped). */
void lunio__report(lua_State *L, lunio_loop *loop);
/* Report the failed task at idx through the exception handler, once. */
void lunio__report_task(lua_State *L, lunio_loop *loop, int idx);
/* Report every failed task whose error nobody retrieved, once each. */
void lunio__report_unretrieved(lua_State *L, lunio_loop *loop);
/* Create a task running the callable at fn_idx with nargs values above
 * it; pops them and pushes the Task. */
lunio_task *lunio__spawn(lua_State *L, lunio_loop *loop, int nargs);
/* Request cancellation of the task/future whose userdata is at idx, with
 * the error at the top (popped); returns 1 when taken, 0 when done. */
int lunio__cancel(lua_State *L, int idx);
/* Resolve t, whose userdata sits just below the n values at the top of L,
 * with those values (results, or one error value); pops all n + 1. */
void lunio__finish(lua_State *L, lunio_task *t, int state, int n);
/* Resume the parked t with the n values at the top of L (moved to t's
 * coroutine; n <= LUNIO_MAX_WAKE); error != 0 makes the await raise the
 * single value. With n == 0 it touches no Lua state, so libuv callbacks
 * may call it; values are pushed only from Lua contexts. The resume
 * happens on a later tick. */
void lunio__wake(lua_State *L, lunio_task *t, int n, int error);

/* The tasks parked on one event (a process's exit, a signal's delivery),
 * in a growable array; zero-initialised it is empty. */
typedef struct lunio_tasklist {
  lunio_task **v;
  int n, cap;
} lunio_tasklist;
/* Appends t; raises "not enough memory" when the array cannot grow. */
void lunio__tasklist_add(lua_State *L, lunio_tasklist *l, lunio_task *t);
/* Takes t out (an on_cancel hook); the order of the others may change. */
void lunio__tasklist_remove(lunio_tasklist *l, lunio_task *t);
/* Wakes every task (no values) and empties the list; like lunio__wake
 * with n == 0 it touches no Lua state. */
void lunio__tasklist_wake_all(lua_State *L, lunio_tasklist *l);
/* Frees the array (the list must not be used again). */
void lunio__tasklist_free(lunio_tasklist *l);
/* Suspend the running task (L is its coroutine) until lunio__wake; when
 * it is cancelled, on_cancel(t, data) runs first. k is resumed with the
 * woken values on top; it must call lunio__resumed first. When a
 * cancellation is already pending, calls on_cancel and raises at once.
 * A resume that does not come from the scheduler is refused and leaves
 * the task parked. */
int lunio__park_c(lua_State *L, lunio_task *t, lunio_cancel_fn on_cancel,
                  void *data, lua_KContext ctx, lua_KFunction k);
/* Suspend the running task t until the task or future `target` finishes
 * (or t is cancelled: the cancel is passed on to target, see
 * lunio__cancel). With check_cancel, a pending cancellation is raised
 * first. k as for lunio__park_c. */
int lunio__park_task(lua_State *L, lunio_task *t, lunio_task *target,
                     int check_cancel, lua_KContext ctx, lua_KFunction k);
/* Suspend the running task t until lunio__wake, with no C-level hook (the
 * building block of core.park and Join:wait). */
int lunio__park_plain(lua_State *L, lunio_task *t, lua_KContext ctx,
                      lua_KFunction k);
/* Register w as a waiter of the not-done task/future t (its userdata at
 * idx): the slot if free, else the loop's waiters table (w's userdata at
 * w_idx is then stored there and called as fn(w, t) soon after t ends). */
void lunio__add_waiter(lua_State *L, lunio_task *t, int idx, uintptr_t waiter,
                       int w_idx);
/* Append the value at w_idx to the waiters table entry of t (userdata at
 * idx): a task, or a callable called as fn(t) soon after t ends. */
void lunio__add_waiter_value(lua_State *L, lunio_task *t, int idx, int w_idx);
/* In a continuation of lunio__park_c: raises the cancellation error when
 * the task was cancelled while parked (on_cancel ran) or after it was woken
 * (on_cancel did not run: release what the finished operation holds before
 * calling this). */
void lunio__resumed(lua_State *L, lunio_task *t);
/* lunio__resumed for awaits that return their failure instead of raising
 * it (core.park, join:wait): pushes false, err and returns 2 when the
 * wake-up was an error or a cancellation is due, else returns 0. */
int lunio__resumed_failed(lua_State *L, lunio_task *t);
/* A cancellation requested after the task was woken: it is raised where
 * the task resumes, as asyncio does (the await that was about to return
 * fails), and what the finished operation produced is dropped. */
#define LUNIO_CANCEL_AT_RESUME(t)                                              \
  (((t)->flags & (LUNIO_F_MUST_CANCEL | LUNIO_F_DELEGATE)) ==                  \
   LUNIO_F_MUST_CANCEL)
/* The task L runs for: L is the coroutine the scheduler resumed for the
 * current task, or a lunio.coroutine that coroutine resumed. NULL
 * otherwise (main thread, plain coroutines, a parked task's coroutine
 * resumed by someone else). */
lunio_task *lunio__task_of(lua_State *L);
/* lunio__task_of with the running loop already known (NULL: none). */
lunio_task *lunio__task_of_running(lua_State *L, lunio_loop *running);
/* Whether task t (from lunio__task_of*) may park from L: every coroutine
 * between L and the scheduler can yield (not inside table.sort, a
 * message handler, __gc ...). */
#define LUNIO_CAN_WAIT(L, t)                                                   \
  ((t) != NULL && lua_isyieldable(L) && (t)->loop->chain_yieldable)
/* lunio__task_of, raising a clear error when L is not in a task or
 * cannot yield here (inside a C call such as table.sort). */
lunio_task *lunio__check_in_task(lua_State *L, const char *fname);
lunio_task *lunio__check_in_task_of(lua_State *L, lunio_loop *running,
                                    const char *fname);
/* In a continuation: nonzero when this resume came from the scheduler for
 * the task that parked (`owner`). Otherwise the caller must restore the
 * stack height it parked with and return lunio__refuse_resume. */
int lunio__resume_ok(lua_State *L, lunio_task *owner);
/* Yield again from continuation k after a foreign resume, handing the
 * resumer an error object that says why (see coro.c). */
int lunio__refuse_resume(lua_State *L, lua_KContext ctx, lua_KFunction k);
/* Push the shared "refused resume" error object. */
void lunio__push_refusal(lua_State *L);
/* Push the results of the done task at idx (raising its error); returns
 * their count. Marks the error retrieved. */
int lunio__push_results(lua_State *L, int idx);
/* Drive the loop until main (may be NULL: drain only) is done, then cancel
 * the rest and run it until every task finished. Runs Lua; protect it. */
void lunio__drive(lua_State *L, lunio_loop *loop, lunio_task *main);
/* Whether tasks or handles are still pending or ready. */
int lunio__has_tasks(lunio_loop *loop);
/* Settle what is left at teardown: every pending task, handle and future
 * is marked cancelled and detached from the loop (t->loop = NULL). */
void lunio__settle_all(lua_State *L, lunio_loop *loop);
/* Pushes the pending cancellation error of the running task t and clears
 * the request (for continuations that return it instead of raising). */
void lunio__take_cancel(lua_State *L, lunio_task *t);
/* The Task or Future at idx, or NULL. */
lunio_task *lunio__to_awaitable(lua_State *L, int idx);
/* Checks that arg is a Task or Future; raises a bad argument otherwise. */
lunio_task *lunio__check_awaitable(lua_State *L, int arg);
/* Marks the metatable at the top as one of an awaitable type. */
void lunio__mark_awaitable(lua_State *L);
/* Task names: push the name of the task/future at idx; set it. */
void lunio__push_task_name(lua_State *L, int idx);
void lunio__set_task_name(lua_State *L, int task, int name);
/* Push where the task at idx was created (debug mode) or nil. */
void lunio__push_task_origin(lua_State *L, int idx);
/* core.set_exception_handler(fn|nil): the handler of loops without one. */
int lunio__set_global_handler(lua_State *L);
/* Sets up the scheduler's registry slots (at luaopen). */
void lunio__open_sched(lua_State *L);
/* Free the scheduler's C memory (ready ring, heap). */
void lunio__sched_free(lunio_loop *loop);
/* Queue d to run (d->fn) after the current libuv pass, in Lua context.
 * Never allocates and touches no Lua state, so libuv callbacks may call it;
 * a no-op while d is queued already. */
void lunio__defer(lunio_loop *loop, lunio_deferred *d);
/* Take d off the queue (its owner goes away); no-op when not queued. */
void lunio__defer_cancel(lunio_loop *loop, lunio_deferred *d);
/* libuv callbacks of the loop's own handles (set up by loop.c). */
void lunio__on_timer(uv_timer_t *timer);

/* ---- resource.c: the loop's registry of open things ------------------ */

/* Anything a loop must close at teardown: a session, a stream, a server, a
 * process. Embedded in the module's struct. */
typedef struct lunio_resource_ops {
  const char *name;                /* for leak reports ("HttpSession") */
  void (*close)(lunio_resource *); /* start closing; idempotent */
} lunio_resource_ops;

struct lunio_resource {
  lunio_resource *next, *prev;
  const lunio_resource_ops *ops;
  lunio_loop *loop; /* NULL while not registered */
};

/* Register r (ops set) with loop; closed at teardown, newest first. */
void lunio__resource_add(lunio_loop *loop, lunio_resource *r,
                         const lunio_resource_ops *ops);
/* Unregister r (when its owner closed it); no-op when not registered. */
void lunio__resource_remove(lunio_resource *r);
/* Close every registered resource, newest first (teardown). */
void lunio__resources_close(lunio_loop *loop);
/* Count the registered resources (debug reports, tests). */
int lunio__resources_count(lunio_loop *loop);

/* Per-loop state of a module, made on first use and freed at teardown. */
typedef struct lunio_ext_ops {
  const char *name;
  size_t size;                                /* zeroed on creation */
  void (*close)(lunio_loop *loop, void *ext); /* teardown, may be NULL */
  void (*free)(lunio_loop *loop, void *ext);  /* after close callbacks */
} lunio_ext_ops;

/* The module's state on loop (created zeroed on first use; NULL when out
 * of memory or the loop is closing). */
void *lunio__loop_ext(lunio_loop *loop, const lunio_ext_ops *ops);
/* The module's state if it was made, else NULL. */
void *lunio__loop_ext_peek(lunio_loop *loop, const lunio_ext_ops *ops);
/* Teardown: close every extension (newest first), then, after the loop ran
 * its close callbacks, free them. */
void lunio__exts_close(lunio_loop *loop);
void lunio__exts_free(lunio_loop *loop);

/* ---- req.c: one libuv request awaited by one task -------------------- */

typedef struct lunio_req lunio_req;

struct lunio_req {
  union {
    uv_req_t req;
    uv_fs_t fs;
    uv_getaddrinfo_t gai;
    uv_getnameinfo_t gni;
    uv_work_t work;
    uv_connect_t connect;
    uv_write_t write;
    uv_shutdown_t shutdown;
    uv_udp_send_t send;
  } u;
  lunio_loop *loop;
  lunio_task *task; /* the parked task; NULL once it left (cancelled) */
  /* Done and handed to a woken task that has not consumed it yet: listed
   * by the loop, which frees it should the task never run again. */
  lunio_req *dnext, *dprev;
  int delivered;
  int status; /* the request's result, once done */
  int done;
  /* Releases what the request holds besides this struct (uv_fs_req_
   * cleanup, buffers). Called exactly once, by lunio__req_free. */
  void (*cleanup)(lunio_req *r);
};

/* A new request of `size` bytes (>= sizeof(lunio_req), for module data
 * after it), zeroed, counted as I/O in flight; raises on out of memory. */
lunio_req *lunio__req_new(lua_State *L, lunio_loop *loop, size_t size);
/* Park the running task t until lunio__req_done(r). If the task is
 * cancelled first, the request is cancelled (uv_cancel) or orphaned: its
 * callback frees it later. k(L, status, ctx) then runs in the task with r
 * done; it must call lunio__req_resumed(L, r) before using r. */
int lunio__req_await(lua_State *L, lunio_req *r, lunio_task *t,
                     lua_KContext ctx, lua_KFunction k);
/* From the request's libuv callback: record the status and wake the
 * task, or free r when nobody waits any more. */
void lunio__req_done(lunio_req *r, int status);
/* In the continuation: raises a cancellation that arrived after the wake
 * (freeing r first); otherwise returns r->status and r stays valid until
 * lunio__req_free. */
int lunio__req_resumed(lua_State *L, lunio_req *r);
/* Release r (its cleanup, then the memory). */
void lunio__req_free(lunio_req *r);
/* For operations of several requests (fs.c's read_file): ready r, done and
 * owned by its continuation, to carry the next request. The module's data
 * after the lunio_req stays; the caller has released the libuv part (e.g.
 * uv_fs_req_cleanup). Counted as I/O in flight again; then submit it and
 * lunio__req_await as usual. Allocates nothing, so it cannot fail. */
void lunio__req_again(lunio_req *r);

/* ---- buf.c: byte queues and a buffer pool ---------------------------- */

/* A byte queue: [off, len) of p is unread. Zeroed = empty. */
typedef struct lunio_buf {
  char *p;
  size_t off, len, cap;
} lunio_buf;

#define LUNIO_POOL_MIN ((size_t)1024) /* the smallest class */
#define LUNIO_POOL_CLASSES 13         /* 1 KiB .. 4 MiB */

/* Blocks in power-of-two classes kept for reuse (per loop; zeroed = empty):
 * up to 1 MiB of each class up to 64 KiB, two blocks of 128 to 512 KiB,
 * none larger. */
typedef struct lunio_pool {
  void **blocks[LUNIO_POOL_CLASSES]; /* a stack per class */
  int n[LUNIO_POOL_CLASSES], cap[LUNIO_POOL_CLASSES];
  size_t kept; /* bytes in all stacks */
} lunio_pool;

/* Unread bytes of b. */
#define lunio__buf_avail(b) ((b)->len - (b)->off)
/* A block of at least size bytes (its size in *cap), reused when the pool
 * (may be NULL) has one; NULL when out of memory. */
void *lunio__pool_get(lunio_pool *pool, size_t size, size_t *cap);
/* Give back a block of lunio__pool_get (kept for reuse, or freed). */
void lunio__pool_put(lunio_pool *pool, void *p, size_t cap);
/* Free every block the pool keeps. */
void lunio__pool_free(lunio_pool *pool);
/* Room for `extra` more bytes at the end of b: compacts, then grows (from
 * pool, or with realloc when pool is NULL). 0 or UV_ENOMEM (b unchanged). */
int lunio__buf_reserve(lunio_buf *b, size_t extra, lunio_pool *pool);
/* Append n bytes; 0 or UV_ENOMEM. */
int lunio__buf_add(lunio_buf *b, const void *s, size_t n, lunio_pool *pool);
/* Drop the first n unread bytes; with a pool, an emptied queue gives its
 * memory back. */
void lunio__buf_consume(lunio_buf *b, size_t n, lunio_pool *pool);
/* Release b's memory (to pool, or free when NULL) and zero it. */
void lunio__buf_free(lunio_buf *b, lunio_pool *pool);

/* ---- loop.c ---------------------------------------------------------- */

/* The default loop of this Lua state (created on first use). */
lunio_loop *lunio__default_loop(lua_State *L);
/* The loop new work goes to: the running loop (every running task's),
 * else the default one. */
lunio_loop *lunio__target_loop(lua_State *L);
/* The libuv loop behind a lunio loop. */
uv_loop_t *lunio__uv(lunio_loop *loop);
/* The main lua_State the loop runs on (for pushing values from libuv
 * callbacks; never call Lua code from inside a libcurl callback). */
lua_State *lunio__loop_state(lunio_loop *loop);
/* Whether run() holds SIGINT for this loop now (so lunio.signal must not
 * watch SIGINT through libuv, and gets it from sigint_observer instead). */
int lunio__owns_sigint(lunio_loop *loop);
int luaopen_lunio_loop(lua_State *L); /* registers Loop/Handle types */

/* ---- task.c ---------------------------------------------------------- */

int luaopen_lunio_task(lua_State *L); /* registers Task/Future types */

/* ---- join.c ---------------------------------------------------------- */

void lunio__open_join(lua_State *L); /* Join type; adds core.join */

/* ---- coro.c ---------------------------------------------------------- */

void lunio__open_coroutine(lua_State *L); /* pushes the lunio.coroutine table */

/* ---- modules --------------------------------------------------------- */

/* http.c over http_multi.c (http_multi.h: the only files that see curl) */
void lunio__open_http(lua_State *L); /* pushes the core http table */
void lunio__open_dns(lua_State *L);  /* adds getaddrinfo/getnameinfo */
/* dns.c: parses a numeric IPv4 or IPv6 address with port into ss; 0, or
 * UV_EINVAL. */
int lunio__parse_ip(const char *ip, int port, struct sockaddr_storage *ss);
/* dns.c: pushes the address (string) and port of an inet or inet6 sa, or
 * nil, nil for another family; returns 2. */
int lunio__push_sockaddr(lua_State *L, const struct sockaddr *sa);

/* ---- modules: files, threads, signals (issue 11) ---------------------- */

void lunio__open_fs(lua_State *L);     /* pushes the core fs table */
void lunio__open_thread(lua_State *L); /* adds to_thread */
void lunio__open_signal(lua_State *L); /* pushes the core signal table */

/* ---- stream.c: streams, listeners, UDP --------------------------------- */

void lunio__open_stream(lua_State *L); /* pushes the core stream table */
/* For process pipes: pushes a Stream that owns a new uv_pipe_t, initialised
 * (uv_pipe_init, no IPC) but not open, and returns it for uv_spawn's
 * UV_CREATE_PIPE; once spawned, the Stream reads and writes it. On a failed
 * spawn, close it with lunio__stream_close_at. */
uv_pipe_t *lunio__stream_new_pipe(lua_State *L, lunio_loop *loop);
/* Closes the Stream at idx at once, dropping queued writes (idempotent). */
void lunio__stream_close_at(lua_State *L, int idx);

/* ---- process.c: child processes (issue 11) ------------------------------ */

void lunio__open_process(lua_State *L); /* pushes the core process table */
/* signal.c, for process.c: the number of the signal named `name`
 * ("SIGTERM"), or 0 when the name is unknown. */
int lunio__signal_number(const char *name);
/* signal.c: pushes the name of signal signum ("SIGTERM"; "SIGRTMIN+2" or
 * "SIG77" for those without one). */
void lunio__push_signal_name(lua_State *L, int signum);

#endif
