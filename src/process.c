/*
 * process.c - child processes on libuv (uv_spawn): the handle type
 * "lunio.ProcessHandle" that lua/lunio/subprocess.lua wraps into the public
 * lunio.Process and lunio.subprocess API.
 *
 * spawn() starts a child with each standard stream inherited, sent to
 * /dev/null, or connected to a new pipe. A pipe is a lunio.Stream made by
 * stream.c (lunio__stream_new_pipe), so reading and writing a child works
 * as on a socket: flow control, read_line, cancellation that loses no
 * data. The handle offers the primitives the Lua layer builds its
 * policies on: wait (park until the child is reaped), kill, terminate
 * (SIGTERM now, SIGKILL when a grace period ends; the timer is here in C,
 * so the escalation happens even when no task waits any more) and close
 * (SIGKILL and reap at once).
 *
 * Lifetime: the C state (struct proc) is malloc'd apart from its userdata,
 * because libuv owns the process handle and the grace timer until their
 * close callbacks run. Both handles are closed as soon as the child is
 * reaped, which is also when the proc stops being one of its loop's
 * resources; the struct is freed once both close callbacks ran and the
 * userdata was collected, whichever comes last. Collecting the userdata of
 * a running child does not kill it: the child is reaped when it exits (no
 * zombie), or killed and reaped when the loop closes.
 *
 * Killing at once (loop teardown, or close() where no task can wait): the
 * child gets SIGKILL and is reaped with a blocking waitpid. The handle is
 * closed first, which takes the pid off libuv's list of children, so libuv
 * never reaps it too. SIGKILL cannot be caught or ignored: the wait lasts
 * as long as the kernel takes to tear the process down.
 *
 * A running child counts as I/O in flight: virtual time does not jump
 * while a real process runs.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#define PROCESS_MT "lunio.ProcessHandle"

typedef struct proc {
  lunio_resource res; /* registered from spawn until the child is reaped */
  uv_process_t h;
  uv_timer_t grace; /* terminate(): sends SIGKILL when it fires */
  lunio_loop *loop;
  lunio_tasklist waiters; /* tasks parked in wait() */
  int64_t exit_status;
  int term_signal;
  int pid;
  int open;                 /* libuv handles whose close callback is due */
  unsigned exited : 1;      /* reaped: exit_status and term_signal final */
  unsigned terminating : 1; /* terminate() sent SIGTERM */
  unsigned ud_gone : 1;     /* nothing in Lua points here any more */
} proc;

typedef struct proc_ud {
  proc *p; /* NULL until the child was spawned */
} proc_ud;

/* ---- lifetime ------------------------------------------------------------ */

static void proc_free_if_unused(proc *p) {
  if (p->open == 0 && p->ud_gone) {
    lunio__tasklist_free(&p->waiters);
    free(p);
  }
}

static void on_handle_closed(uv_handle_t *h) {
  proc *p = h->data;
  p->open--;
  proc_free_if_unused(p);
}

static void close_handles(proc *p) {
  if (uv_is_closing((uv_handle_t *)&p->h)) /* both go together */
    return;
  uv_close((uv_handle_t *)&p->h, on_handle_closed);
  uv_close((uv_handle_t *)&p->grace, on_handle_closed);
}

/* The child was reaped: record how it ended, wake every waiter, release
 * the handles. Touches no Lua state (libuv callbacks call it). */
static void finish(proc *p, int64_t exit_status, int term_signal) {
  p->exited = 1;
  p->exit_status = exit_status;
  p->term_signal = term_signal;
  lunio__io_end(p->loop);
  lunio__resource_remove(&p->res);
  lunio__tasklist_wake_all(lunio__loop_state(p->loop), &p->waiters);
  close_handles(p);
}

static void on_child_exit(uv_process_t *h, int64_t exit_status,
                          int term_signal) {
  finish(h->data, exit_status, term_signal);
}

/* The grace period of terminate() ended with the child still running. */
static void on_grace_end(uv_timer_t *t) {
  proc *p = t->data;
  if (!p->exited)
    uv_process_kill(&p->h, SIGKILL);
}

/* SIGKILL the running child and reap it now, blocking (see the top). */
static void kill_now(proc *p) {
  int status = 0;
  pid_t rc;
  if (p->exited)
    return;
  uv_process_kill(&p->h, SIGKILL);
  close_handles(p); /* libuv forgets the pid: only this waitpid reaps it */
  do
    rc = waitpid(p->pid, &status, 0);
  while (rc < 0 && errno == EINTR);
  if (rc == p->pid && WIFEXITED(status))
    finish(p, WEXITSTATUS(status), 0);
  else if (rc == p->pid && WIFSIGNALED(status))
    finish(p, 0, WTERMSIG(status));
  else /* reaped by someone else (SIGCHLD set to SIG_IGN ...) */
    finish(p, 0, SIGKILL);
}

/* The loop closes: its tasks were settled already (their cancel hooks
 * left the waiter list); no time is left for a grace period. */
static void proc_res_close(lunio_resource *r) {
  kill_now(container_of(r, proc, res));
}

static const lunio_resource_ops proc_resource = {"Process", proc_res_close};

/* ---- spawning ------------------------------------------------------------ */

enum { M_INHERIT, M_PIPE, M_NULL };
static const char *const stdio_modes[] = {"inherit", "pipe", "null", NULL};

/* Pushes a NULL-terminated array of the strings t[1..n] of the table at
 * idx (argument arg) in a new userdata, which owns the memory. The strings
 * stay valid while the table holds them. */
static char **string_list(lua_State *L, int idx, int arg, int *n) {
  lua_Unsigned len = lua_rawlen(L, idx), i;
  char **v;
  luaL_argcheck(L, len < (size_t)INT_MAX / sizeof *v, arg, "list too long");
  v = lua_newuserdatauv(L, (size_t)(len + 1) * sizeof *v, 0);
  for (i = 1; i <= len; i++) {
    size_t slen;
    const char *s;
    if (lua_rawgeti(L, idx, (lua_Integer)i) != LUA_TSTRING)
      luaL_argerror(L, arg, "list of strings expected");
    s = lua_tolstring(L, -1, &slen);
    luaL_argcheck(L, strlen(s) == slen, arg, "string contains a NUL byte");
    v[i - 1] = (char *)s;
    lua_pop(L, 1);
  }
  v[len] = NULL;
  *n = (int)len;
  return v;
}

/* Whether a failed spawn is the working directory's fault rather than
 * the program's: libuv reports a failed chdir in the child with the same
 * errno as a failed exec. Only called on that error path. */
static int cwd_is_bad(const char *cwd) {
  struct stat st;
  return cwd != NULL &&
         (stat(cwd, &st) != 0 || !S_ISDIR(st.st_mode) || access(cwd, X_OK));
}

/* Raises the error of a failed spawn: kind from libuv ("enoent",
 * "eacces" ...), with .path the program (or the directory at fault). */
static int raise_spawn_error(lua_State *L, int rc, const char *file,
                             const char *cwd) {
  int bad_cwd = (rc == UV_ENOENT || rc == UV_ENOTDIR || rc == UV_EACCES) &&
                cwd_is_bad(cwd);
  const char *what =
      bad_cwd ? lua_pushfstring(L, "cannot change to directory '%s'", cwd)
              : lua_pushfstring(L, "cannot run '%s'", file);
  lunio__uv_error_new(L, rc, what);
  lua_pushstring(L, bad_cwd ? cwd : file);
  lua_setfield(L, -2, "path");
  return lua_error(L);
}

/*
 * spawn(file, args, cwd, env, stdin, stdout, stderr)
 *   -> Process, stdin Stream|nil, stdout Stream|nil, stderr Stream|nil
 *
 * args: list of strings (args[1] is the child's argv[0]); cwd: string or
 * nil; env: nil (inherit) or a list of "NAME=value" strings; stdio modes:
 * "inherit", "pipe" or "null". subprocess.lua checks the user's arguments
 * first; the checks here only keep misuse of the core from crashing.
 */
static int process_spawn(lua_State *L) {
  const char *file = luaL_checkstring(L, 1);
  const char *cwd = luaL_optstring(L, 3, NULL);
  lunio_loop *loop = lunio__target_loop(L);
  uv_stdio_container_t stdio[3];
  uv_process_options_t opts;
  int modes[3], nargs, nenv, i, rc;
  char **args, **env = NULL;
  proc_ud *ud;
  proc *p;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 4))
    luaL_checktype(L, 4, LUA_TTABLE);
  for (i = 0; i < 3; i++)
    modes[i] = luaL_checkoption(L, 5 + i, NULL, stdio_modes);
  lua_settop(L, 7);
  if (loop->closing || loop->closed)
    return lunio__error_raise(L, "closed", "the loop is closed");
  args = string_list(L, 2, 2, &nargs); /* index 8 */
  luaL_argcheck(L, nargs > 0, 2, "empty argument list");
  if (!lua_isnil(L, 4))
    env = string_list(L, 4, 4, &nenv); /* index 9 */
  else
    lua_pushnil(L);
  ud = lua_newuserdatauv(L, sizeof *ud, 0); /* index 10 */
  ud->p = NULL;
  luaL_setmetatable(L, PROCESS_MT);
  for (i = 0; i < 3; i++) { /* indices 11, 12, 13 */
    if (modes[i] == M_PIPE) {
      /* Flags are the child's view: it reads stdin, writes the others. */
      stdio[i].flags =
          UV_CREATE_PIPE | (i == 0 ? UV_READABLE_PIPE : UV_WRITABLE_PIPE);
      stdio[i].data.stream = (uv_stream_t *)lunio__stream_new_pipe(L, loop);
    } else {
      lua_pushnil(L);
      /* UV_IGNORE: libuv opens /dev/null for the child's fds 0 to 2. */
      stdio[i].flags = modes[i] == M_INHERIT ? UV_INHERIT_FD : UV_IGNORE;
      stdio[i].data.fd = i;
    }
  }
  p = calloc(1, sizeof *p);
  if (p == NULL) {
    for (i = 0; i < 3; i++)
      if (modes[i] == M_PIPE)
        lunio__stream_close_at(L, 11 + i);
    return luaL_error(L, "not enough memory");
  }
  p->loop = loop;
  uv_timer_init(lunio__uv(loop), &p->grace); /* cannot fail on Unix */
  p->grace.data = p;
  p->h.data = p;
  memset(&opts, 0, sizeof opts);
  opts.exit_cb = on_child_exit;
  opts.file = file;
  opts.args = args;
  opts.env = env;
  opts.cwd = cwd;
  opts.stdio = stdio;
  opts.stdio_count = 3;
  rc = uv_spawn(lunio__uv(loop), &p->h, &opts);
  /* The process handle is initialised even when uv_spawn fails. */
  p->open = 2;
  if (rc < 0) {
    /* No half-made Process: close the handles (their callbacks free p),
     * and the pipes, which libuv may have opened already. */
    p->ud_gone = 1;
    close_handles(p);
    for (i = 0; i < 3; i++)
      if (modes[i] == M_PIPE)
        lunio__stream_close_at(L, 11 + i);
    return raise_spawn_error(L, rc, file, cwd);
  }
  p->pid = p->h.pid;
  ud->p = p;
  lunio__resource_add(loop, &p->res, &proc_resource);
  lunio__io_begin(loop);
  return 4;
}

/* ---- the handle --------------------------------------------------------- */

static proc *check_proc(lua_State *L, int idx) {
  proc_ud *ud = luaL_checkudata(L, idx, PROCESS_MT);
  if (ud->p == NULL)
    luaL_argerror(L, idx, "process never started");
  return ud->p;
}

/* Pushes how the child ended: code, nil or nil, signal name. */
static int push_status(lua_State *L, proc *p) {
  if (p->term_signal != 0) {
    lua_pushnil(L);
    lunio__push_signal_name(L, p->term_signal);
  } else {
    lua_pushinteger(L, (lua_Integer)p->exit_status);
    lua_pushnil(L);
  }
  return 2;
}

static void waiter_on_cancel(lunio_task *t, void *data) {
  lunio__tasklist_remove(&((proc *)data)->waiters, t);
}

/* The frame is [Process]; woken when the child was reaped. */
static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  proc_ud *ud = lua_touserdata(L, 1);
  (void)status;
  (void)ctx;
  lunio__resumed(L, lunio__task_of(L));
  lua_settop(L, 1);
  return push_status(L, ud->p);
}

/* h:wait() -> code, signal once the child was reaped (at once if it was).
 * Cancelling the wait only stops waiting: killing the child is the Lua
 * layer's policy. */
static int process_wait(lua_State *L) {
  proc *p = check_proc(L, 1);
  lunio_task *t;
  lua_settop(L, 1);
  if (p->exited)
    return push_status(L, p);
  t = lunio__check_in_task(L, "wait");
  if (t->loop != p->loop)
    return lunio__error_raise(L, "invalid_state",
                              "'wait': this process belongs to another loop");
  lunio__tasklist_add(L, &p->waiters, t);
  return lunio__park_c(L, t, waiter_on_cancel, p, 0, wait_k);
}

/* h:poll() -> code, signal if the child was reaped, else nothing */
static int process_poll(lua_State *L) {
  proc *p = check_proc(L, 1);
  return p->exited ? push_status(L, p) : 0;
}

/* h:kill(signum) -> true when sent, false when the child was reaped
 * already (its pid may belong to another process by now). */
static int process_kill(lua_State *L) {
  proc *p = check_proc(L, 1);
  lua_Integer signum = luaL_checkinteger(L, 2);
  int rc;
  luaL_argcheck(L, signum >= 0 && signum < 65, 2, "not a signal number");
  if (p->exited) {
    lua_pushboolean(L, 0);
    return 1;
  }
  rc = uv_process_kill(&p->h, (int)signum);
  if (rc < 0)
    return lunio__uv_error_raise(L, rc, "kill");
  lua_pushboolean(L, 1);
  return 1;
}

/* h:terminate(grace) -> true when the child still ran: SIGTERM now (once),
 * SIGKILL `grace` seconds later if it still runs then (0: at once). */
static int process_terminate(lua_State *L) {
  proc *p = check_proc(L, 1);
  lua_Number grace = luaL_checknumber(L, 2);
  luaL_argcheck(L, grace >= 0, 2, "must not be negative");
  if (p->exited) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (grace == 0)
    uv_process_kill(&p->h, SIGKILL);
  else if (!p->terminating) {
    /* 2^52 ms is beyond any wait; the clamp keeps the cast defined. */
    double ms = grace * 1000.0;
    uv_process_kill(&p->h, SIGTERM);
    uv_timer_start(&p->grace, on_grace_end,
                   ms < 4503599627370496.0 ? (uint64_t)ms : UINT64_MAX / 2, 0);
  }
  p->terminating = 1;
  lua_pushboolean(L, 1);
  return 1;
}

/* h:close(): SIGKILL a running child and reap it at once (blocking for as
 * long as the kernel takes); idempotent. */
static int process_close(lua_State *L) {
  kill_now(check_proc(L, 1));
  return 0;
}

static int process_pid(lua_State *L) {
  lua_pushinteger(L, check_proc(L, 1)->pid);
  return 1;
}

static int process_gc(lua_State *L) {
  proc_ud *ud = lua_touserdata(L, 1);
  proc *p = ud->p;
  if (p == NULL)
    return 0;
  ud->p = NULL;
  p->ud_gone = 1;
  proc_free_if_unused(p); /* else a close callback frees it */
  return 0;
}

/* (The public lunio.Process shows this too.) */
static int process_tostring(lua_State *L) {
  proc_ud *ud = luaL_checkudata(L, 1, PROCESS_MT);
  proc *p = ud->p;
  if (p == NULL)
    lua_pushliteral(L, "lunio.ProcessHandle<not started>");
  else if (!p->exited)
    lua_pushfstring(L, "lunio.Process<pid %d, running>", p->pid);
  else if (p->term_signal != 0) {
    lunio__push_signal_name(L, p->term_signal);
    lua_pushfstring(L, "lunio.Process<pid %d, killed by %s>", p->pid,
                    lua_tostring(L, -1));
  } else
    lua_pushfstring(L, "lunio.Process<pid %d, exited %d>", p->pid,
                    (int)p->exit_status);
  return 1;
}

/* ---- module functions -------------------------------------------------- */

/* signum(name) -> the number of the signal named name, or nil */
static int process_signum(lua_State *L) {
  int n = lunio__signal_number(luaL_checkstring(L, 1));
  if (n == 0)
    return 0;
  lua_pushinteger(L, n);
  return 1;
}

/* can_wait() -> whether the caller may await here: in a task, with every
 * coroutine up to the scheduler able to yield (not in a __gc, a message
 * handler, table.sort's comparator ...). */
static int process_can_wait(lua_State *L) {
  lunio_task *t = lunio__task_of(L);
  lua_pushboolean(L, LUNIO_CAN_WAIT(L, t) && !t->loop->closing);
  return 1;
}

/* environ() -> table of the current process's environment, name -> value */
static int process_environ(lua_State *L) {
  char **e;
  lua_newtable(L);
  for (e = environ; e != NULL && *e != NULL; e++) {
    const char *eq = strchr(*e, '=');
    if (eq == NULL || eq == *e)
      continue;
    lua_pushlstring(L, *e, (size_t)(eq - *e));
    lua_pushstring(L, eq + 1);
    lua_rawset(L, -3);
  }
  return 1;
}

void lunio__open_process(lua_State *L) {
  static const luaL_Reg funcs[] = {{"spawn", process_spawn},
                                   {"signum", process_signum},
                                   {"can_wait", process_can_wait},
                                   {"environ", process_environ},
                                   {NULL, NULL}};
  static const luaL_Reg methods[] = {{"wait", process_wait},
                                     {"poll", process_poll},
                                     {"kill", process_kill},
                                     {"terminate", process_terminate},
                                     {"close", process_close},
                                     {"pid", process_pid},
                                     {NULL, NULL}};
  luaL_newlib(L, funcs);
  if (luaL_newmetatable(L, PROCESS_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, process_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, process_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
}
