/*
 * stream.c - byte streams (TCP, Unix sockets, pipes), listening sockets
 * and UDP sockets on libuv, awaited by tasks.
 *
 * Lua types (lua/lunio/stream.lua builds the public API on them):
 *   lunio.Stream    a connected stream: read, read_exactly, read_until,
 *                   read_line, lines, read_all, write, drain, shutdown,
 *                   close, abort, peername, sockname, set_nodelay
 *   lunio.Listener  a listening TCP or Unix socket; each connection it
 *                   accepts is handed to a Lua callback as a Stream
 *   lunio.UDP       a bound UDP socket: send, recv, sockname, close
 *
 * Lifetime: the C state of each (struct stream, listener, udp) is malloc'd
 * apart from its userdata, which only points at it. libuv owns the handle
 * until its close callback runs, and that callback frees the struct, so a
 * userdata may be collected while its handle still closes. close(),
 * __close and __gc start the close; every open one is a lunio_resource
 * that the loop's teardown closes. A stream closed with writes still
 * queued stays open in C until libuv has flushed them, as asyncio's
 * transport.close() does; abort() discards them.
 *
 * No Lua runs inside libuv callbacks: they move bytes, update counters and
 * wake parked tasks (lunio__wake with no values). A connection a listener
 * accepts is turned into a Stream and handed to Lua by a deferred call
 * (lunio__defer), from the scheduler's tick.
 *
 * Reading: a stream reads (uv_read_start) from its first read call on,
 * into a per-loop 64 KiB slab, and appends what arrived to its own byte
 * queue, whose blocks come from the loop's pool (buf.c) and go back when
 * the queue empties; a large read hands the slab itself to the queue
 * instead of copying it. Reading stops while the queue holds more than
 * the read high-water mark (or what a pending read_exactly/read_until
 * needs) and starts again once the reader took it below half of it.
 *
 * Writing: a write with nothing queued goes straight to the socket
 * (send with MSG_NOSIGNAL: no request, no copy); what the kernel did not
 * take is copied into a uv_write request. write() suspends only while the
 * unsent amount is above the write high-water mark. While libuv holds
 * queued writes, SIGPIPE is blocked in the loop's thread and any SIGPIPE
 * they raise is discarded, so a peer that goes away yields "epipe" or
 * "econnreset" instead of killing the process (lunio changes no
 * process-wide signal setting).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define STREAM_MT "lunio.Stream"
#define LISTENER_MT "lunio.Listener"
#define UDP_MT "lunio.UDP"

#define SLAB_SIZE ((size_t)64 * 1024)
/* A read at least this large into an empty queue becomes the queue's block
 * (no copy); smaller ones are copied into a block of their size. */
#define SWAP_MIN ((size_t)16 * 1024)
/* Reads this small into an empty queue go to a buffer inside the stream:
 * request/response traffic then never takes a block from the pool. */
#define SMALL_CAP 256
/* UDP: received datagrams queued before receiving pauses; queued sends. */
#define UDP_RECV_MAX_COUNT 1024
#define UDP_RECV_MAX_BYTES ((size_t)1 << 20)
#define UDP_SEND_MAX_BYTES ((size_t)1 << 20)

/* ---- per-loop state ---------------------------------------------------- */

typedef struct stream_loop {
  lunio_pool pool; /* read queues, write requests, the slab */
  char *slab;      /* what libuv reads into; NULL when handed to a queue */
  size_t slab_cap;
  int nopen; /* streams, listeners and UDP sockets Lua has not closed */
} stream_loop;

static void sl_free(lunio_loop *loop, void *ext) {
  stream_loop *sl = ext;
  (void)loop;
  lunio__pool_put(&sl->pool, sl->slab, sl->slab_cap);
  sl->slab = NULL;
  lunio__pool_free(&sl->pool);
}

static const lunio_ext_ops stream_ext = {"stream", sizeof(stream_loop), NULL,
                                         sl_free};

static stream_loop *sl_get(lua_State *L, lunio_loop *loop) {
  stream_loop *sl = lunio__loop_ext(loop, &stream_ext);
  if (sl == NULL)
    lunio__error_raise(L, "closed", "the loop is closing");
  return sl;
}

/* ---- SIGPIPE ----------------------------------------------------------- */

/* Signal masks are per thread, so this count is too: queued socket writes
 * of every loop on this thread. While it is above zero SIGPIPE is blocked
 * (when it was not already), and a SIGPIPE those writes raised is taken
 * off the thread before the mask is restored. */
static __thread int sigpipe_holds;
static __thread int sigpipe_blocked_here;

static void sigpipe_hold(void) {
  sigset_t set, old;
  if (sigpipe_holds++ > 0)
    return;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  if (pthread_sigmask(SIG_BLOCK, &set, &old) == 0)
    sigpipe_blocked_here = !sigismember(&old, SIGPIPE);
}

static void sigpipe_release(void) {
  sigset_t set, pending;
  struct timespec zero = {0, 0};
  if (--sigpipe_holds > 0 || !sigpipe_blocked_here)
    return;
  sigpipe_blocked_here = 0;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE))
    while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
      ;
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

/* ---- addresses --------------------------------------------------------- */

/* Checks argument arg as a port (0 allowed when zero_ok). */
static int check_port(lua_State *L, int arg, int zero_ok) {
  lua_Integer port = luaL_checkinteger(L, arg);
  luaL_argcheck(L, port >= (zero_ok ? 0 : 1) && port <= 65535, arg,
                "port out of range");
  return (int)port;
}

/* Checks argument arg as a numeric address and parses it with port. */
static void check_ip(lua_State *L, int arg, int port,
                     struct sockaddr_storage *ss) {
  size_t len;
  const char *ip = luaL_checklstring(L, arg, &len);
  if (strlen(ip) != len || lunio__parse_ip(ip, port, ss) != 0)
    luaL_argerror(L, arg, "not an IPv4 or IPv6 address");
}

/* Checks argument arg as a Unix socket path. */
static const char *check_path(lua_State *L, int arg) {
  size_t len;
  const char *path = luaL_checklstring(L, arg, &len);
  struct sockaddr_un sun;
  luaL_argcheck(L, strlen(path) == len, arg, "path contains a NUL byte");
  luaL_argcheck(L, len > 0, arg, "path is empty");
  luaL_argcheck(L, len < sizeof sun.sun_path, arg,
                "path too long for a Unix socket");
  return path;
}

/* Checks argument arg as an optional size (bytes), >= min. */
static size_t opt_size(lua_State *L, int arg, size_t def, size_t min) {
  lua_Integer n;
  if (lua_isnoneornil(L, arg))
    return def;
  n = luaL_checkinteger(L, arg);
  luaL_argcheck(L, n >= (lua_Integer)min, arg,
                min > 0 ? "must be positive" : "must not be negative");
  return (size_t)n;
}

/* How a stream buffers: opts.limit, opts.write_high_water and
 * opts.read_high_water of open_connection, start_server and the like. */
typedef struct stream_opts {
  size_t limit, write_hwm, read_hwm;
} stream_opts;

static const stream_opts default_stream_opts = {1024 * 1024, 64 * 1024,
                                                64 * 1024};

/* Checks the stream options at args o, o+1, o+2 (limit, write_high_water,
 * read_high_water). */
static stream_opts check_stream_opts(lua_State *L, int o) {
  stream_opts so;
  so.limit = opt_size(L, o, default_stream_opts.limit, 1);
  so.write_hwm = opt_size(L, o + 1, default_stream_opts.write_hwm, 0);
  so.read_hwm = opt_size(L, o + 2, default_stream_opts.read_hwm, 1);
  return so;
}

/* ---- streams ------------------------------------------------------------ */

enum { K_TCP, K_PIPE };

/* A task waiting on the write side. */
enum { W_WRITE, W_DRAIN, W_SHUTDOWN };
typedef struct waiter {
  lunio_task *t;
  int what; /* W_*: unsent <= hwm, unsent == 0, shutdown done */
} waiter;

typedef struct stream_ud stream_ud;
typedef struct listener listener;
typedef struct stream stream;

struct stream {
  lunio_resource res;
  union {
    uv_handle_t h;
    uv_stream_t s;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } u;
  uv_connect_t connect;
  uv_shutdown_t shut;
  lunio_loop *loop;
  stream_loop *sl;
  stream_ud *ud;         /* NULL once Lua closed it (or never had it) */
  stream *next_accepted; /* a listener's connections not handed to Lua */
  lunio_buf rb;          /* received, not yet read */
  stream_opts opts;
  size_t want; /* unread bytes the parked reader needs to be woken */
  size_t hold; /* unread bytes the current read may need (pauses later) */
  size_t scan; /* read_until: bytes already searched for the separator */
  lunio_task *reader;    /* parked in a read */
  lunio_task *read_busy; /* inside a read call: parked or woken */
  lunio_task *connector; /* parked in the connect */
  waiter *waiters;
  int nwaiters, capwaiters;
  size_t unsent; /* bytes in queued write requests */
  int nwrites;   /* queued write requests */
  int read_err;  /* UV_EOF or a read error (sticky) */
  int write_err; /* a write error (sticky) */
  int connect_status, shut_status;
  unsigned kind : 1, reading : 1, started : 1, connecting : 1, shutting : 1,
      shut_done : 1, closing : 1, closed : 1, nosend : 1;
  int fd;                /* the socket, once connected or accepted */
  char small[SMALL_CAP]; /* rb's memory while it holds little */
};

struct stream_ud {
  stream *s; /* NULL once closed */
};

/* How Lua closes a stream: after the queued writes (close), at once
 * dropping them (loop teardown, a failed connect), or at once with a TCP
 * reset (abort). */
enum { C_FLUSH, C_NOW, C_RESET };

static const lunio_resource_ops stream_resource;
static void stream_finish_close(stream *s, int how);

/* ---- the read queue: the small buffer, else pool blocks ----------------- */

static void rb_release(stream *s) {
  if (s->rb.p == s->small)
    memset(&s->rb, 0, sizeof s->rb);
  else
    lunio__buf_free(&s->rb, &s->sl->pool);
}

/* Appends n bytes; 0 or UV_ENOMEM. */
static int rb_add(stream *s, const char *data, size_t n) {
  lunio_buf *b = &s->rb;
  if (b->p == NULL && n <= SMALL_CAP) {
    b->p = s->small;
    b->cap = SMALL_CAP;
  }
  if (b->p == s->small) {
    size_t have = b->len - b->off;
    if (have + n <= SMALL_CAP) {
      if (b->len + n > SMALL_CAP) { /* compact */
        memmove(s->small, s->small + b->off, have);
        b->off = 0;
        b->len = have;
      }
      memcpy(s->small + b->len, data, n);
      b->len += n;
      return 0;
    }
    { /* outgrown: move what is unread to a block of the pool */
      size_t cap;
      char *p = lunio__pool_get(&s->sl->pool, have + n, &cap);
      if (p == NULL)
        return UV_ENOMEM;
      memcpy(p, s->small + b->off, have);
      b->p = p;
      b->cap = cap;
      b->off = 0;
      b->len = have;
    }
  }
  return lunio__buf_add(b, data, n, &s->sl->pool);
}

static void rb_consume(stream *s, size_t n) {
  lunio_buf *b = &s->rb;
  if (b->p != s->small) {
    lunio__buf_consume(b, n, &s->sl->pool);
    return;
  }
  b->off += n;
  if (b->off == b->len)
    memset(b, 0, sizeof *b);
}

static int stream_fd(stream *s) {
  uv_os_fd_t fd = -1;
  uv_fileno(&s->u.h, &fd);
  return fd;
}

static void on_stream_closed(uv_handle_t *h) {
  stream *s = h->data;
  rb_release(s);
  free(s->waiters);
  free(s);
}

/* A new stream struct with an initialised handle (registered as a
 * resource); NULL with *rc set on failure. */
static stream *stream_alloc(lunio_loop *loop, stream_loop *sl, int kind,
                            const stream_opts *so, int *rc) {
  stream *s = calloc(1, sizeof *s);
  if (s == NULL) {
    *rc = UV_ENOMEM;
    return NULL;
  }
  s->kind = kind;
  s->fd = -1;
  s->loop = loop;
  s->sl = sl;
  s->opts = *so;
  *rc = kind == K_TCP ? uv_tcp_init(lunio__uv(loop), &s->u.tcp)
                      : uv_pipe_init(lunio__uv(loop), &s->u.pipe, 0);
  if (*rc < 0) {
    free(s);
    return NULL;
  }
  s->u.h.data = s;
  s->connect.data = s;
  s->shut.data = s;
  lunio__resource_add(loop, &s->res, &stream_resource);
  return s;
}

static size_t read_mark(const stream *s) {
  return s->hold > s->opts.read_hwm ? s->hold : s->opts.read_hwm;
}

/* Wakes the task parked in *slot, if any, and empties the slot. */
static void wake_task(lunio_loop *loop, lunio_task **slot) {
  lunio_task *t = *slot;
  if (t == NULL)
    return;
  *slot = NULL;
  lunio__wake(lunio__loop_state(loop), t, 0, 0);
}

/* Wakes the write-side waiters whose condition holds. */
static void wake_writers(stream *s) {
  int i, j = 0;
  for (i = 0; i < s->nwaiters; i++) {
    waiter w = s->waiters[i];
    int ready = s->ud == NULL || s->write_err != 0 ||
                (w.what == W_WRITE   ? s->unsent <= s->opts.write_hwm
                 : w.what == W_DRAIN ? s->unsent == 0
                                     : s->shut_done);
    if (ready)
      lunio__wake(lunio__loop_state(s->loop), w.t, 0, 0);
    else
      s->waiters[j++] = w;
  }
  s->nwaiters = j;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  stream *s = h->data;
  stream_loop *sl = s->sl;
  (void)suggested;
  if (sl->slab == NULL)
    sl->slab = lunio__pool_get(&sl->pool, SLAB_SIZE, &sl->slab_cap);
  buf->base = sl->slab;
  buf->len = sl->slab != NULL ? sl->slab_cap : 0; /* 0: UV_ENOBUFS */
}

static void stop_reading(stream *s) {
  if (s->reading) {
    uv_read_stop(&s->u.s);
    s->reading = 0;
  }
}

static void on_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf) {
  stream *s = h->data;
  stream_loop *sl = s->sl;
  if (nread > 0) {
    if (lunio__buf_avail(&s->rb) == 0 && (size_t)nread >= SWAP_MIN &&
        buf->base == sl->slab) {
      /* A big read: the slab becomes the queue's block. */
      rb_release(s);
      s->rb.p = sl->slab;
      s->rb.cap = sl->slab_cap;
      s->rb.len = (size_t)nread;
      sl->slab = NULL;
    } else if (rb_add(s, buf->base, (size_t)nread) != 0) {
      s->read_err = UV_ENOBUFS;
      stop_reading(s);
    }
    if (s->reading && lunio__buf_avail(&s->rb) >= read_mark(s))
      stop_reading(s); /* the reader is behind: let the kernel hold it */
  } else if (nread < 0) {
    /* EOF and errors: libuv stopped reading; ENOBUFS (no slab) did not. */
    s->read_err = (int)nread;
    stop_reading(s);
  }
  if (s->reader != NULL &&
      (lunio__buf_avail(&s->rb) >= s->want || s->read_err != 0))
    wake_task(s->loop, &s->reader);
}

static int start_reading(stream *s) {
  int rc;
  if (s->reading || s->read_err != 0 || s->closing || s->closed)
    return 0;
  rc = uv_read_start(&s->u.s, on_alloc, on_read);
  if (rc < 0)
    return rc;
  s->reading = 1;
  s->started = 1;
  return 0;
}

/* Lua closed the stream (close, abort, __close, __gc, teardown): detach
 * the userdata, wake whoever waits on it, then close the handle, now or
 * (C_FLUSH) once the queued writes and shutdown are done. */
static void stream_lua_close(stream *s, int how) {
  if (s->ud != NULL) {
    s->ud->s = NULL;
    s->ud = NULL;
    s->sl->nopen--;
  }
  stop_reading(s);
  rb_release(s);
  wake_task(s->loop, &s->reader);
  wake_task(s->loop, &s->connector);
  wake_writers(s);
  s->read_busy = NULL;
  if (how == C_FLUSH && !s->closed &&
      (s->nwrites > 0 || (s->shutting && !s->shut_done))) {
    s->closing = 1; /* the last write or shutdown callback closes it */
    return;
  }
  stream_finish_close(s, how);
}

static void stream_finish_close(stream *s, int how) {
  if (s->closed)
    return;
  s->closed = 1;
  s->closing = 0;
  stop_reading(s);
  lunio__resource_remove(&s->res);
  /* A reset sends RST instead of FIN (SO_LINGER 0); libuv refuses when a
   * shutdown is pending or the socket is not connected: close plainly. */
  if (how == C_RESET && s->kind == K_TCP && !s->connecting &&
      uv_tcp_close_reset(&s->u.tcp, on_stream_closed) == 0)
    return;
  uv_close(&s->u.h, on_stream_closed);
}

/* The loop closes: its tasks were settled (their cancel hooks detached
 * them from this stream), so just close. */
static void stream_res_close(lunio_resource *r) {
  stream *s = container_of(r, stream, res);
  stream_lua_close(s, C_NOW);
}

static const lunio_resource_ops stream_resource = {"Stream", stream_res_close};

/* ---- the Lua side of streams ------------------------------------------- */

/* Pushes a new Stream userdata for s. */
static stream_ud *push_stream(lua_State *L) {
  stream_ud *ud = lua_newuserdatauv(L, sizeof *ud, 0);
  ud->s = NULL;
  luaL_setmetatable(L, STREAM_MT);
  return ud;
}

static void bind_stream(stream_ud *ud, stream *s) {
  ud->s = s;
  s->ud = ud;
  s->sl->nopen++;
}

/* The Stream at idx. Its methods carry the address of the Stream
 * metatable as upvalue 1 (a light userdata), so the check is a metatable
 * fetch and a pointer comparison: half of what luaL_checkudata or
 * lua_rawequal cost, on the path of every read and write. */
static stream_ud *to_stream(lua_State *L, int idx) {
  stream_ud *ud = lua_touserdata(L, idx);
  if (ud == NULL || !lua_getmetatable(L, idx))
    luaL_typeerror(L, idx, STREAM_MT);
  if (lua_topointer(L, -1) != lua_touserdata(L, lua_upvalueindex(1)))
    luaL_typeerror(L, idx, STREAM_MT);
  lua_pop(L, 1);
  return ud;
}

static stream *check_open(lua_State *L, stream_ud *ud) {
  if (ud->s == NULL)
    lunio__error_raise(L, "closed", "the stream is closed");
  return ud->s;
}

#define STREAM_ARG(L) check_open(L, to_stream(L, 1))

/* The task L runs for, found through the loop of the object it waits on:
 * reads and writes are the hot path, and lunio__check_in_task looks the
 * running loop up in the registry. Raises as that does outside a task, and
 * when the object belongs to another loop. */
static lunio_task *current_task(lua_State *L, lunio_loop *loop,
                                const char *fname) {
  lunio_task *t;
  if (lunio__task_of_running(L, loop) != NULL) /* the common case */
    return lunio__check_in_task_of(L, loop, fname);
  t = lunio__check_in_task(L, fname);
  if (t->loop != loop)
    lunio__error_raise(L, "invalid_state",
                       "'%s': this object belongs to another loop", fname);
  return t;
}

/* ---- reading ------------------------------------------------------------ */

enum { R_SOME, R_EXACT, R_UNTIL, R_LINE, R_ALL };

static const char *const read_names[] = {"read", "read_exactly", "read_until",
                                         "read_line", "read_all"};

static void consume(stream *s, size_t n) {
  rb_consume(s, n);
  s->scan = 0;
  /* The reader caught up: read again (flow control's low-water mark). */
  if (s->started && !s->reading && s->read_err == 0 &&
      lunio__buf_avail(&s->rb) <= s->opts.read_hwm / 2)
    start_reading(s); /* an error shows at the next read */
}

/* Pushes the first n unread bytes as a string and consumes them. */
static void take(lua_State *L, stream *s, size_t n, size_t keep) {
  lua_pushlstring(L, s->rb.p ? s->rb.p + s->rb.off : "", keep);
  consume(s, n);
}

static int raise_read_error(lua_State *L, stream *s) {
  return lunio__uv_error_raise(L, s->read_err, "read");
}

/* Raises kind "eof" (message at the top) with the rest of the queue as
 * .partial. */
static int raise_eof(lua_State *L, stream *s) {
  size_t avail = lunio__buf_avail(&s->rb);
  lunio__error_new(L, "eof", "%s", lua_tostring(L, -1));
  take(L, s, avail, avail);
  lua_setfield(L, -2, "partial");
  return lua_error(L);
}

/* Tries to complete a read of `mode` from what is queued. Stack: [1] the
 * Stream, [2] its argument. Returns the number of results pushed, or -1
 * when it must wait (want and hold set). */
static int try_read(lua_State *L, stream *s, int mode) {
  size_t avail = lunio__buf_avail(&s->rb);
  const char *p = s->rb.p ? s->rb.p + s->rb.off : "";
  switch (mode) {
  case R_SOME: {
    size_t n = (size_t)lua_tointeger(L, 2);
    if (avail > 0 || n == 0) {
      n = n < avail ? n : avail;
      take(L, s, n, n);
      return 1;
    }
    if (s->read_err == UV_EOF) {
      lua_pushnil(L);
      return 1;
    }
    if (s->read_err != 0)
      return raise_read_error(L, s);
    s->want = 1;
    s->hold = 0;
    return -1;
  }
  case R_EXACT: {
    size_t n = (size_t)lua_tointeger(L, 2);
    if (avail >= n) {
      take(L, s, n, n);
      return 1;
    }
    if (s->read_err == UV_EOF) {
      lua_pushfstring(L, "the stream ended after %d of %d bytes", (int)avail,
                      (int)n);
      return raise_eof(L, s);
    }
    if (s->read_err != 0)
      return raise_read_error(L, s);
    s->want = n;
    s->hold = n;
    return -1;
  }
  case R_UNTIL:
  case R_LINE: {
    size_t seplen;
    const char *sep =
        mode == R_LINE ? (seplen = 1, "\n") : lua_tolstring(L, 2, &seplen);
    const char *hit = NULL;
    if (avail >= seplen && s->scan <= avail - seplen)
      hit = memmem(p + s->scan, avail - s->scan, sep, seplen);
    if (hit != NULL) {
      size_t before = (size_t)(hit - p), end = before + seplen;
      if (before > s->opts.limit)
        goto limit;
      if (mode == R_LINE) {
        size_t len = before > 0 && p[before - 1] == '\r' ? before - 1 : before;
        take(L, s, end, len);
      } else
        take(L, s, end, end);
      return 1;
    }
    /* A separator found later starts at avail - seplen + 1 or beyond. */
    s->scan = avail >= seplen ? avail - seplen + 1 : 0;
    if (avail >= s->opts.limit + seplen)
      goto limit;
    if (s->read_err == UV_EOF) {
      if (avail == 0) {
        lua_pushnil(L);
        return 1;
      }
      if (mode == R_LINE) { /* the last line had no end of line */
        take(L, s, avail, avail);
        return 1;
      }
      lua_pushfstring(L,
                      "the stream ended before the separator (%d bytes "
                      "read)",
                      (int)avail);
      return raise_eof(L, s);
    }
    if (s->read_err != 0)
      return raise_read_error(L, s);
    s->want = avail + 1;
    s->hold = s->opts.limit + seplen;
    return -1;
  limit:
    lunio__error_new(L, "limit",
                     "no separator within the first %d bytes (the stream's "
                     "limit); the data stays unread",
                     (int)s->opts.limit);
    lua_pushinteger(L, (lua_Integer)s->opts.limit);
    lua_setfield(L, -2, "limit");
    return lua_error(L);
  }
  default: /* R_ALL */
    if (s->read_err == UV_EOF) {
      take(L, s, avail, avail);
      return 1;
    }
    if (s->read_err != 0)
      return raise_read_error(L, s);
    s->want = (size_t)-1;
    s->hold = (size_t)-1;
    return -1;
  }
}

static void reader_on_cancel(lunio_task *t, void *data) {
  stream *s = data;
  (void)t;
  s->reader = NULL;
  s->read_busy = NULL;
  s->hold = 0;
}

static int read_k(lua_State *L, int status, lua_KContext ctx);

/* The body of every read: complete it, or park until on_read has more. */
static int read_wait(lua_State *L, stream_ud *ud, int mode) {
  stream *s = check_open(L, ud);
  lunio_task *t;
  int n, rc;
  if (s->read_busy != NULL)
    return lunio__error_raise(L, "invalid_state",
                              "another task is already reading this stream");
  n = try_read(L, s, mode);
  if (n >= 0) {
    s->hold = 0;
    return n;
  }
  if (lunio__buf_avail(&s->rb) < read_mark(s) && (rc = start_reading(s)) < 0) {
    s->hold = 0;
    return lunio__uv_error_raise(L, rc, "read");
  }
  t = current_task(L, s->loop, read_names[mode]);
  s->reader = t;
  s->read_busy = t;
  return lunio__park_c(L, t, reader_on_cancel, s, mode, read_k);
}

static int read_k(lua_State *L, int status, lua_KContext ctx) {
  stream_ud *ud = lua_touserdata(L, 1);
  lunio_task *t;
  (void)status;
  if (ud->s != NULL) {
    t = current_task(L, ud->s->loop, read_names[ctx]);
    ud->s->read_busy = NULL;
    ud->s->reader = NULL;
    ud->s->hold = 0; /* read_wait sets it again if it must wait more */
  } else
    t = lunio__task_of(L);
  lunio__resumed(L, t); /* a cancellation: what arrived stays queued */
  return read_wait(L, ud, (int)ctx);
}

/* stream:read([n]) -> up to n bytes (default 64 KiB), nil at EOF */
static int stream_read(lua_State *L) {
  stream_ud *ud = to_stream(L, 1);
  lua_Integer n = luaL_optinteger(L, 2, 64 * 1024);
  luaL_argcheck(L, n >= 0, 2, "size must not be negative");
  lua_settop(L, 1);
  lua_pushinteger(L, n);
  return read_wait(L, ud, R_SOME);
}

/* stream:read_exactly(n) -> n bytes; kind "eof" with .partial before */
static int stream_read_exactly(lua_State *L) {
  stream_ud *ud = to_stream(L, 1);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 0, 2, "size must not be negative");
  lua_settop(L, 2);
  return read_wait(L, ud, R_EXACT);
}

/* stream:read_until(sep) -> data up to and including sep */
static int stream_read_until(lua_State *L) {
  stream_ud *ud = to_stream(L, 1);
  size_t len;
  luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, len > 0, 2, "separator is empty");
  lua_settop(L, 2);
  return read_wait(L, ud, R_UNTIL);
}

/* stream:read_line() -> the next line without its end of line, or nil */
static int stream_read_line(lua_State *L) {
  stream_ud *ud = to_stream(L, 1);
  lua_settop(L, 1);
  lua_pushnil(L);
  return read_wait(L, ud, R_LINE);
}

/* stream:read_all() -> everything up to EOF ("" when nothing is left) */
static int stream_read_all(lua_State *L) {
  stream_ud *ud = to_stream(L, 1);
  lua_settop(L, 1);
  lua_pushnil(L);
  return read_wait(L, ud, R_ALL);
}

/* The iterator of stream:lines(); its upvalue is the Stream. */
static int lines_iter(lua_State *L) {
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushnil(L);
  return read_wait(L, lua_touserdata(L, 1), R_LINE);
}

/* stream:lines() -> an iterator of read_line for a generic for */
static int stream_lines(lua_State *L) {
  to_stream(L, 1);
  lua_settop(L, 1);
  lua_pushcclosure(L, lines_iter, 1);
  return 1;
}

/* ---- writing ----------------------------------------------------------- */

typedef struct wreq {
  uv_write_t req;
  stream *s;
  size_t len, cap;
  char data[];
} wreq;

/* Writes what the socket takes now, without a request and without
 * SIGPIPE. Returns the bytes written (0 when it would block) or an error. */
static ssize_t direct_write(stream *s, const char *p, size_t len) {
  ssize_t n;
  if (!s->nosend) {
    if (s->fd < 0)
      s->fd = stream_fd(s);
    do
      n = send(s->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n >= 0)
      return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return 0;
    if (errno != ENOTSOCK)
      return uv_translate_sys_error(errno);
    s->nosend = 1; /* a pipe: write(2) through libuv, SIGPIPE held */
  }
  {
    uv_buf_t buf = uv_buf_init((char *)p, (unsigned)len);
    sigpipe_hold();
    n = uv_try_write(&s->u.s, &buf, 1);
    sigpipe_release();
    return n == UV_EAGAIN ? 0 : n;
  }
}

static void on_write(uv_write_t *req, int status) {
  wreq *w = container_of(req, wreq, req);
  stream *s = w->s;
  s->unsent -= w->len;
  s->nwrites--;
  lunio__io_end(s->loop);
  sigpipe_release();
  if (status < 0 && status != UV_ECANCELED && s->write_err == 0)
    s->write_err = status;
  lunio__pool_put(&s->sl->pool, w, w->cap);
  wake_writers(s);
  if (s->closing && s->nwrites == 0 && !(s->shutting && !s->shut_done))
    stream_finish_close(s, C_FLUSH);
}

/* Queues a copy of p[0..len) behind the writes in flight. */
static int queue_write(stream *s, const char *p, size_t len) {
  size_t cap;
  wreq *w = lunio__pool_get(&s->sl->pool, sizeof *w + len, &cap);
  uv_buf_t buf;
  int rc;
  if (w == NULL)
    return UV_ENOMEM;
  w->s = s;
  w->len = len;
  w->cap = cap;
  memcpy(w->data, p, len);
  buf = uv_buf_init(w->data, (unsigned)len);
  sigpipe_hold(); /* uv_write may write at once */
  rc = uv_write(&w->req, &s->u.s, &buf, 1, on_write);
  if (rc < 0) {
    sigpipe_release();
    lunio__pool_put(&s->sl->pool, w, cap);
    return rc;
  }
  s->unsent += len;
  s->nwrites++;
  lunio__io_begin(s->loop);
  return 0;
}

static void writer_on_cancel(lunio_task *t, void *data) {
  stream *s = data;
  int i, j = 0;
  for (i = 0; i < s->nwaiters; i++)
    if (s->waiters[i].t != t)
      s->waiters[j++] = s->waiters[i];
  s->nwaiters = j;
}

static int write_k(lua_State *L, int status, lua_KContext ctx);

/* Raises the stream's write error, or "closed" after a shutdown. */
static stream *check_writable(lua_State *L, stream_ud *ud) {
  stream *s = check_open(L, ud);
  if (s->write_err != 0)
    lunio__uv_error_raise(L, s->write_err, "write");
  return s;
}

/* Waits (ctx: W_*) for the write side; returns 0 results when done. */
static int write_wait(lua_State *L, stream_ud *ud, int what) {
  stream *s = check_writable(L, ud);
  lunio_task *t;
  if (what == W_WRITE   ? s->unsent <= s->opts.write_hwm
      : what == W_DRAIN ? s->unsent == 0
                        : s->shut_done) {
    if (what == W_SHUTDOWN && s->shut_status < 0 &&
        s->shut_status != UV_ENOTCONN)
      return lunio__uv_error_raise(L, s->shut_status, "shutdown");
    return 0;
  }
  t = current_task(L, s->loop,
                   what == W_WRITE   ? "write"
                   : what == W_DRAIN ? "drain"
                                     : "shutdown");
  if (s->nwaiters == s->capwaiters) {
    int cap = s->capwaiters ? s->capwaiters * 2 : 4;
    waiter *w = realloc(s->waiters, (size_t)cap * sizeof *w);
    if (w == NULL)
      return luaL_error(L, "not enough memory");
    s->waiters = w;
    s->capwaiters = cap;
  }
  s->waiters[s->nwaiters].t = t;
  s->waiters[s->nwaiters++].what = what;
  return lunio__park_c(L, t, writer_on_cancel, s, what, write_k);
}

static int write_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  lunio__resumed(L, lunio__task_of(L)); /* cancelled: the data stays queued */
  return write_wait(L, lua_touserdata(L, 1), (int)ctx);
}

/* stream:write(data): buffers data; suspends while the unsent amount is
 * above the write high-water mark. */
static int stream_write(lua_State *L) {
  stream_ud *ud = to_stream(L, 1);
  size_t len, off = 0;
  const char *p = luaL_checklstring(L, 2, &len);
  stream *s;
  int rc;
  luaL_argcheck(L, len <= INT32_MAX, 2, "more than 2 GiB in one write");
  s = check_writable(L, ud);
  if (s->shutting)
    return lunio__error_raise(L, "closed",
                              "the stream was shut down for writing");
  if (len == 0)
    return 0;
  if (s->nwrites == 0) {
    ssize_t n = direct_write(s, p, len);
    if (n < 0) {
      s->write_err = (int)n;
      return lunio__uv_error_raise(L, (int)n, "write");
    }
    off = (size_t)n;
    if (off == len)
      return 0;
  }
  if ((rc = queue_write(s, p + off, len - off)) < 0)
    return lunio__uv_error_raise(L, rc, "write");
  if (s->unsent <= s->opts.write_hwm)
    return 0;
  lua_settop(L, 1);
  return write_wait(L, ud, W_WRITE);
}

/* stream:drain(): waits until every queued byte went to the kernel */
static int stream_drain(lua_State *L) {
  stream_ud *ud = to_stream(L, 1);
  lua_settop(L, 1);
  return write_wait(L, ud, W_DRAIN);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  stream *s = req->data;
  s->shut_done = 1;
  s->shut_status = status == UV_ECANCELED ? 0 : status;
  lunio__io_end(s->loop);
  wake_writers(s);
  if (s->closing && s->nwrites == 0)
    stream_finish_close(s, C_FLUSH);
}

/* stream:shutdown(): half close; flushes the queue, sends FIN and waits
 * until that is done. Reading goes on. */
static int stream_shutdown(lua_State *L) {
  stream_ud *ud = to_stream(L, 1);
  stream *s = check_open(L, ud);
  lua_settop(L, 1);
  if (!s->shutting) {
    int rc = uv_shutdown(&s->shut, &s->u.s, on_shutdown);
    if (rc < 0)
      return lunio__uv_error_raise(L, rc, "shutdown");
    s->shutting = 1;
    lunio__io_begin(s->loop);
  }
  return write_wait(L, ud, W_SHUTDOWN);
}

/* ---- other stream methods ---------------------------------------------- */

/* stream:close(): idempotent; queued writes are still sent */
static int stream_close(lua_State *L) {
  stream_ud *ud = to_stream(L, 1);
  if (ud->s != NULL)
    stream_lua_close(ud->s, C_FLUSH);
  return 0;
}

/* stream:abort(): closes at once, dropping queued writes (TCP: RST) */
static int stream_abort(lua_State *L) {
  stream_ud *ud = to_stream(L, 1);
  if (ud->s != NULL)
    stream_lua_close(ud->s, C_RESET);
  return 0;
}

static int stream_gc(lua_State *L) {
  stream_ud *ud = lua_touserdata(L, 1);
  if (ud->s != NULL)
    stream_lua_close(ud->s, C_FLUSH);
  return 0;
}

/* stream:closed() -> whether close() or abort() was called */
static int stream_closed(lua_State *L) {
  lua_pushboolean(L, to_stream(L, 1)->s == NULL);
  return 1;
}

static int push_pipe_name(lua_State *L, stream *s, int peer) {
  char buf[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  size_t len = sizeof buf;
  int rc = peer ? uv_pipe_getpeername(&s->u.pipe, buf, &len)
                : uv_pipe_getsockname(&s->u.pipe, buf, &len);
  if (rc < 0)
    return lunio__uv_error_raise(L, rc, peer ? "peername" : "sockname");
  lua_pushlstring(L, buf, len);
  lua_pushnil(L);
  return 2;
}

static int stream_name(lua_State *L, int peer) {
  stream *s = STREAM_ARG(L);
  struct sockaddr_storage ss;
  int len = sizeof ss, rc;
  if (s->kind == K_PIPE)
    return push_pipe_name(L, s, peer);
  rc = peer ? uv_tcp_getpeername(&s->u.tcp, (struct sockaddr *)&ss, &len)
            : uv_tcp_getsockname(&s->u.tcp, (struct sockaddr *)&ss, &len);
  if (rc < 0)
    return lunio__uv_error_raise(L, rc, peer ? "peername" : "sockname");
  return lunio__push_sockaddr(L, (const struct sockaddr *)&ss);
}

/* stream:peername() -> host, port (Unix sockets: path, nil) */
static int stream_peername(lua_State *L) { return stream_name(L, 1); }

/* stream:sockname() -> host, port (Unix sockets: path, nil) */
static int stream_sockname(lua_State *L) { return stream_name(L, 0); }

/* stream:set_nodelay(on): TCP_NODELAY (on by default); no-op on Unix
 * sockets. */
static int stream_set_nodelay(lua_State *L) {
  stream *s = STREAM_ARG(L);
  int rc;
  luaL_checkany(L, 2);
  if (s->kind == K_TCP &&
      (rc = uv_tcp_nodelay(&s->u.tcp, lua_toboolean(L, 2))) < 0)
    return lunio__uv_error_raise(L, rc, "set_nodelay");
  return 0;
}

/* stream:buffer_info() -> unread bytes queued, unsent bytes queued,
 * whether the stream is reading now (diagnostics and tests) */
static int stream_buffer_info(lua_State *L) {
  stream *s = STREAM_ARG(L);
  lua_pushinteger(L, (lua_Integer)lunio__buf_avail(&s->rb));
  lua_pushinteger(L, (lua_Integer)s->unsent);
  lua_pushboolean(L, s->reading);
  return 3;
}

static int stream_tostring(lua_State *L) {
  stream_ud *ud = to_stream(L, 1);
  lua_pushfstring(L, "lunio.Stream<%s%s>: %p",
                  ud->s == NULL          ? "closed"
                  : ud->s->kind == K_TCP ? "tcp"
                                         : "unix",
                  ud->s && ud->s->read_err == UV_EOF ? ", eof" : "",
                  (void *)ud);
  return 1;
}

/* ---- connecting ------------------------------------------------------- */

static void on_connect(uv_connect_t *req, int status) {
  stream *s = req->data;
  s->connecting = 0;
  s->connect_status = status;
  lunio__io_end(s->loop);
  wake_task(s->loop, &s->connector);
}

static void connector_on_cancel(lunio_task *t, void *data) {
  stream *s = data;
  (void)t;
  s->connector = NULL;
  stream_lua_close(s, C_NOW); /* on_connect sees UV_ECANCELED */
}

/* Common end of tcp_connect and pipe_connect: the Stream is at index ctx
 * (on a cancellation, the error the task was woken with is above it). */
static int connect_k(lua_State *L, int status, lua_KContext ctx) {
  stream_ud *ud = lua_touserdata(L, (int)ctx);
  lunio_task *t = lunio__task_of(L);
  stream *s = ud->s;
  (void)status;
  (void)ctx;
  /* Cancelled after the connect finished: do not leak the socket. */
  if (s != NULL && LUNIO_CANCEL_AT_RESUME(t))
    stream_lua_close(s, C_NOW);
  lunio__resumed(L, t);
  if (s == NULL || ud->s == NULL)
    return lunio__error_raise(L, "closed", "the stream was closed");
  if (s->connect_status < 0) {
    int rc = s->connect_status;
    stream_lua_close(s, C_NOW);
    lunio__uv_error_new(L, rc, "connect");
    return lua_error(L);
  }
  if (s->kind == K_TCP)
    uv_tcp_nodelay(&s->u.tcp, 1); /* as asyncio: small writes go at once */
  lua_settop(L, (int)ctx);
  return 1;
}

/* Pushes a Stream bound to a new stream of kind with options so. */
static stream *new_stream(lua_State *L, lunio_loop *loop, int kind,
                          const stream_opts *so) {
  stream_loop *sl = sl_get(L, loop);
  stream_ud *ud = push_stream(L);
  int rc;
  stream *s = stream_alloc(loop, sl, kind, so, &rc);
  if (s == NULL)
    lunio__uv_error_raise(L, rc, "cannot create a stream");
  bind_stream(ud, s);
  return s;
}

/* tcp_connect(ip, port [, limit, write_hwm, read_hwm]) -> Stream */
static int stream_tcp_connect(lua_State *L) {
  struct sockaddr_storage ss;
  int port = check_port(L, 2, 0);
  lunio_task *t;
  stream_opts so;
  stream *s;
  int rc;
  check_ip(L, 1, port, &ss);
  t = lunio__check_in_task(L, "open_connection");
  lua_settop(L, 5);
  so = check_stream_opts(L, 3);
  s = new_stream(L, t->loop, K_TCP, &so);
  rc = uv_tcp_connect(&s->connect, &s->u.tcp, (struct sockaddr *)&ss,
                      on_connect);
  if (rc < 0) {
    stream_lua_close(s, C_NOW);
    return lunio__uv_error_raise(L, rc, "connect");
  }
  s->connecting = 1;
  lunio__io_begin(s->loop);
  s->connector = t;
  return lunio__park_c(L, t, connector_on_cancel, s, 6, connect_k);
}

/* pipe_connect(path [, limit, write_hwm, read_hwm]) -> Stream */
static int stream_pipe_connect(lua_State *L) {
  const char *path = check_path(L, 1);
  lunio_task *t = lunio__check_in_task(L, "open_unix_connection");
  stream_opts so;
  stream *s;
  lua_settop(L, 4);
  so = check_stream_opts(L, 2);
  s = new_stream(L, t->loop, K_PIPE, &so);
  uv_pipe_connect(&s->connect, &s->u.pipe, path, on_connect);
  s->connecting = 1;
  lunio__io_begin(s->loop);
  s->connector = t;
  return lunio__park_c(L, t, connector_on_cancel, s, 5, connect_k);
}

/* ---- listeners ---------------------------------------------------------- */

typedef struct listener_ud {
  listener *l; /* NULL once closed */
} listener_ud;

struct listener {
  lunio_resource res;
  union {
    uv_handle_t h;
    uv_stream_t s;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } u;
  lunio_loop *loop;
  stream_loop *sl;
  lunio_deferred deliver; /* hands accepted streams to Lua */
  listener_ud *ud;
  stream *accepted, *accepted_tail; /* not yet handed to Lua */
  stream_opts opts;                 /* of the accepted streams */
  char *path; /* the socket file of a Unix listener, removed at close */
  lua_Integer accepts, errors;
  int kind, closed, stalled;
};

static void on_listener_closed(uv_handle_t *h) {
  listener *l = h->data;
  free(l->path);
  free(l);
}

/* Stops accepting: drops connections Lua never saw, closes the socket
 * (and removes its file). */
static void listener_close(listener *l) {
  if (l->closed)
    return;
  l->closed = 1;
  lunio__defer_cancel(l->loop, &l->deliver);
  while (l->accepted != NULL) {
    stream *s = l->accepted;
    l->accepted = s->next_accepted;
    stream_lua_close(s, C_RESET); /* the peer sees a reset */
  }
  l->accepted_tail = NULL;
  if (l->ud != NULL) {
    l->ud->l = NULL;
    l->ud = NULL;
    l->sl->nopen--;
  }
  lunio__resource_remove(&l->res);
  if (l->path != NULL)
    unlink(l->path);
  uv_close(&l->u.h, on_listener_closed);
}

static void listener_res_close(lunio_resource *r) {
  listener_close(container_of(r, listener, res));
}

static const lunio_resource_ops listener_resource = {"Listener",
                                                     listener_res_close};

/* Takes the connection libuv accepted into a new stream on the list. */
static int accept_one(listener *l) {
  int rc;
  stream *s = stream_alloc(l->loop, l->sl, l->kind, &l->opts, &rc);
  if (s == NULL)
    return rc;
  rc = uv_accept(&l->u.s, &s->u.s);
  if (rc < 0) {
    stream_lua_close(s, C_NOW);
    return rc;
  }
  if (s->kind == K_TCP)
    uv_tcp_nodelay(&s->u.tcp, 1);
  if (l->accepted_tail != NULL)
    l->accepted_tail->next_accepted = s;
  else
    l->accepted = s;
  l->accepted_tail = s;
  l->accepts++;
  return 0;
}

/* libuv accepted a connection (or failed to). Accepting here, in C, lets
 * libuv drain the whole backlog in one go; Lua gets the streams from the
 * deferred call. Errors are counted, never fatal: EMFILE and ENFILE are
 * handled by libuv's reserve descriptor (it accepts and closes what it
 * cannot keep, and accepting resumes when descriptors free up). */
static void on_connection(uv_stream_t *server, int status) {
  listener *l = server->data;
  if (status < 0) {
    l->errors++;
    return;
  }
  if (accept_one(l) < 0) {
    /* Out of memory: libuv keeps the connection and stops watching the
     * socket until it is accepted; the deferred call tries again. */
    l->stalled = 1;
  }
  lunio__defer(l->loop, &l->deliver);
}

/* In a protected call: hands each accepted stream to the callback. */
static int deliver_all(lua_State *L) {
  listener *l = lua_touserdata(L, 1);
  int base;
  lunio__push_loop_table(L, l->loop);
  lua_rawgetp(L, -1, l);       /* the anchored Listener */
  lua_getiuservalue(L, -1, 1); /* its callback */
  base = lua_gettop(L);
  while (!l->closed && l->accepted != NULL) {
    stream *s = l->accepted;
    stream_ud *ud;
    lua_pushvalue(L, base);
    ud = push_stream(L);
    l->accepted = s->next_accepted;
    if (l->accepted == NULL)
      l->accepted_tail = NULL;
    s->next_accepted = NULL;
    bind_stream(ud, s);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      lua_createtable(L, 0, 2);
      lua_pushliteral(L, "error in a server's connection callback");
      lua_setfield(L, -2, "message");
      lua_insert(L, -2);
      lua_setfield(L, -2, "error");
      lunio__report(L, l->loop);
      if (ud->s != NULL)
        stream_lua_close(ud->s, C_RESET);
    }
    lua_settop(L, base);
  }
  return 0;
}

static void listener_deliver(lua_State *L, lunio_loop *loop,
                             lunio_deferred *d) {
  (void)loop;
  listener *l = container_of(d, listener, deliver);
  int top = lua_gettop(L);
  if (l->closed)
    return;
  if (l->stalled) {
    /* libuv holds a connection and watches the socket no more until it
     * is taken: try again at every round until memory allows. */
    l->stalled = 0;
    if (accept_one(l) < 0) {
      l->stalled = 1;
      lunio__defer(l->loop, &l->deliver);
    }
  }
  if (!lua_checkstack(L, 8))
    return;
  lua_pushcfunction(L, deliver_all);
  lua_pushlightuserdata(L, l);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    lua_createtable(L, 0, 2);
    lua_pushliteral(L, "cannot hand a connection to its server");
    lua_setfield(L, -2, "message");
    lua_insert(L, -2);
    lua_setfield(L, -2, "error");
    lunio__report(L, l->loop);
    if (l->accepted != NULL) /* try again with the next round */
      lunio__defer(l->loop, &l->deliver);
  }
  lua_settop(L, top);
}

static listener_ud *to_listener(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, LISTENER_MT);
}

/* Starts listening on the initialised handle of l (bound already);
 * pushes the Listener, anchored in the loop's table while open. The
 * callback is at arg cb. */
static int listener_start(lua_State *L, listener *l, int backlog, int cb) {
  listener_ud *ud;
  int rc = uv_listen(&l->u.s, backlog, on_connection);
  if (rc < 0) {
    if (l->path != NULL)
      unlink(l->path); /* bound by us a moment ago */
    uv_close(&l->u.h, on_listener_closed);
    return lunio__uv_error_raise(L, rc, "listen");
  }
  ud = lua_newuserdatauv(L, sizeof *ud, 1);
  ud->l = NULL;
  luaL_setmetatable(L, LISTENER_MT);
  lua_pushvalue(L, cb);
  lua_setiuservalue(L, -2, 1);
  lunio__push_loop_table(L, l->loop);
  lua_pushvalue(L, -2);
  lua_rawsetp(L, -2, l);
  lua_pop(L, 1);
  ud->l = l;
  l->ud = ud;
  l->sl->nopen++;
  lunio__resource_add(l->loop, &l->res, &listener_resource);
  return 1;
}

/* A listener struct for the running task's loop; the handle is not yet
 * initialised. Stream options at args o..o+2. */
static listener *new_listener(lua_State *L, lunio_loop *loop, int kind, int o) {
  stream_opts so = check_stream_opts(L, o);
  stream_loop *sl = sl_get(L, loop);
  listener *l = calloc(1, sizeof *l);
  if (l == NULL)
    luaL_error(L, "not enough memory");
  l->loop = loop;
  l->sl = sl;
  l->kind = kind;
  l->opts = so;
  l->deliver.fn = listener_deliver;
  return l;
}

static int check_backlog(lua_State *L, int arg) {
  lua_Integer b = luaL_optinteger(L, arg, 511);
  luaL_argcheck(L, b > 0 && b <= 65535, arg, "backlog out of range");
  return (int)b;
}

/* tcp_listen(ip, port, callback [, backlog, reuseport, ipv6only, limit,
 * write_hwm, read_hwm]) -> Listener; callback(stream) runs in Lua context
 * (outside tasks) for each connection. */
static int stream_tcp_listen(lua_State *L) {
  struct sockaddr_storage ss;
  int port = check_port(L, 2, 1), backlog, rc, fd;
  lunio_loop *loop = lunio__target_loop(L);
  listener *l;
  check_ip(L, 1, port, &ss);
  lunio__check_callable(L, 3);
  backlog = check_backlog(L, 4);
  lua_settop(L, 9);
  l = new_listener(L, loop, K_TCP, 7);
  /* The socket exists from init on, so options can precede bind. */
  rc = uv_tcp_init_ex(lunio__uv(loop), &l->u.tcp, ss.ss_family);
  if (rc < 0) {
    free(l);
    return lunio__uv_error_raise(L, rc, "socket");
  }
  l->u.h.data = l;
  if (lua_toboolean(L, 5)) {
    int on = 1;
    rc = uv_fileno(&l->u.h, &fd);
    if (rc == 0 &&
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0)
      rc = uv_translate_sys_error(errno);
  }
  if (rc == 0)
    rc = uv_tcp_bind(&l->u.tcp, (struct sockaddr *)&ss,
                     lua_toboolean(L, 6) ? UV_TCP_IPV6ONLY : 0);
  if (rc < 0) {
    uv_close(&l->u.h, on_listener_closed);
    lunio__uv_error_new(L, rc, "bind");
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "host");
    lua_pushinteger(L, port);
    lua_setfield(L, -2, "port");
    return lua_error(L);
  }
  return listener_start(L, l, backlog, 3);
}

/* pipe_listen(path, callback [, backlog, limit, write_hwm, read_hwm])
 * -> Listener. A socket file left at path by an earlier server is
 * removed first (as asyncio does); the file is removed at close. */
static int stream_pipe_listen(lua_State *L) {
  const char *path = check_path(L, 1);
  lunio_loop *loop = lunio__target_loop(L);
  struct stat st;
  listener *l;
  int backlog, rc;
  lunio__check_callable(L, 2);
  backlog = check_backlog(L, 3);
  lua_settop(L, 6);
  l = new_listener(L, loop, K_PIPE, 4);
  rc = uv_pipe_init(lunio__uv(loop), &l->u.pipe, 0);
  if (rc < 0) {
    free(l);
    return lunio__uv_error_raise(L, rc, "socket");
  }
  l->u.h.data = l;
  if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
    unlink(path);
  rc = uv_pipe_bind(&l->u.pipe, path);
  if (rc == 0 && (l->path = strdup(path)) == NULL)
    rc = UV_ENOMEM;
  if (rc < 0) {
    uv_close(&l->u.h, on_listener_closed);
    lunio__uv_error_new(L, rc, "bind");
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "path");
    return lua_error(L);
  }
  return listener_start(L, l, backlog, 2);
}

/* listener:close(): stops accepting; idempotent */
static int listener_lua_close(lua_State *L) {
  listener_ud *ud = to_listener(L, 1);
  listener *l = ud->l;
  if (l == NULL)
    return 0;
  lunio__push_loop_table(L, l->loop);
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    lua_rawsetp(L, -2, l);
  }
  listener_close(l);
  return 0;
}

/* listener:sockname() -> host, port (Unix: path, nil) */
static int listener_sockname(lua_State *L) {
  listener_ud *ud = to_listener(L, 1);
  listener *l = ud->l;
  struct sockaddr_storage ss;
  int len = sizeof ss, rc;
  if (l == NULL)
    return lunio__error_raise(L, "closed", "the server is closed");
  if (l->kind == K_PIPE) {
    lua_pushstring(L, l->path);
    lua_pushnil(L);
    return 2;
  }
  rc = uv_tcp_getsockname(&l->u.tcp, (struct sockaddr *)&ss, &len);
  if (rc < 0)
    return lunio__uv_error_raise(L, rc, "sockname");
  return lunio__push_sockaddr(L, (const struct sockaddr *)&ss);
}

/* listener:stats() -> connections accepted, accept errors (EMFILE ...) */
static int listener_stats(lua_State *L) {
  listener_ud *ud = to_listener(L, 1);
  lua_pushinteger(L, ud->l ? ud->l->accepts : 0);
  lua_pushinteger(L, ud->l ? ud->l->errors : 0);
  return 2;
}

static int listener_closed(lua_State *L) {
  lua_pushboolean(L, to_listener(L, 1)->l == NULL);
  return 1;
}

static int listener_tostring(lua_State *L) {
  listener_ud *ud = to_listener(L, 1);
  lua_pushfstring(L, "lunio.Listener<%s>: %p",
                  ud->l == NULL          ? "closed"
                  : ud->l->kind == K_TCP ? "tcp"
                                         : "unix",
                  (void *)ud);
  return 1;
}

/* ---- UDP ---------------------------------------------------------------- */

typedef struct dgram {
  struct dgram *next;
  size_t len;
  int truncated;
  struct sockaddr_storage from;
  char data[];
} dgram;

typedef struct udp_ud udp_ud;

typedef struct udp {
  lunio_resource res;
  uv_udp_t h;
  lunio_loop *loop;
  stream_loop *sl;
  udp_ud *ud;
  dgram *head, *tail; /* received, not yet read */
  size_t qbytes, max_dgram, sendq;
  int qcount, recv_err, receiving, started;
  lunio_task *reader, *read_busy;
} udp;

struct udp_ud {
  udp *u; /* NULL once closed */
};

typedef struct sreq {
  uv_udp_send_t req;
  udp *u;
  size_t len;
  char data[];
} sreq;

static void on_udp_closed(uv_handle_t *h) {
  udp *u = h->data;
  while (u->head != NULL) {
    dgram *d = u->head;
    u->head = d->next;
    free(d);
  }
  free(u);
}

static void udp_close(udp *u) {
  if (u->ud != NULL) {
    u->ud->u = NULL;
    u->ud = NULL;
    u->sl->nopen--;
  }
  wake_task(u->loop, &u->reader);
  u->read_busy = NULL;
  lunio__resource_remove(&u->res);
  uv_close((uv_handle_t *)&u->h, on_udp_closed);
}

static void udp_res_close(lunio_resource *r) {
  udp_close(container_of(r, udp, res));
}

static const lunio_resource_ops udp_resource = {"UDP", udp_res_close};

static void on_udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  udp *u = h->data;
  stream_loop *sl = u->sl;
  (void)suggested;
  if (sl->slab == NULL)
    sl->slab = lunio__pool_get(&sl->pool, SLAB_SIZE, &sl->slab_cap);
  buf->base = sl->slab;
  buf->len = sl->slab == NULL              ? 0
             : u->max_dgram < sl->slab_cap ? u->max_dgram
                                           : sl->slab_cap;
}

static void on_udp_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                        const struct sockaddr *addr, unsigned flags) {
  udp *u = h->data;
  if (nread < 0) {
    u->recv_err = (int)nread;
  } else if (addr != NULL) { /* NULL: nothing more to read now */
    dgram *d = malloc(sizeof *d + (size_t)nread);
    if (d == NULL)
      return; /* dropped, as the kernel drops what it cannot hold */
    d->next = NULL;
    d->len = (size_t)nread;
    d->truncated = (flags & UV_UDP_PARTIAL) != 0;
    memset(&d->from, 0, sizeof d->from);
    memcpy(&d->from, addr,
           addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                       : sizeof(struct sockaddr_in));
    memcpy(d->data, buf->base, (size_t)nread);
    if (u->tail != NULL)
      u->tail->next = d;
    else
      u->head = d;
    u->tail = d;
    u->qcount++;
    u->qbytes += d->len;
    if (u->qcount >= UDP_RECV_MAX_COUNT || u->qbytes >= UDP_RECV_MAX_BYTES) {
      uv_udp_recv_stop(h); /* the reader is behind: the kernel drops */
      u->receiving = 0;
    }
  } else
    return;
  wake_task(u->loop, &u->reader);
}

static udp_ud *to_udp(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, UDP_MT);
}

static udp *check_udp(lua_State *L, int idx) {
  udp_ud *ud = to_udp(L, idx);
  if (ud->u == NULL)
    lunio__error_raise(L, "closed", "the UDP socket is closed");
  return ud->u;
}

/* udp_bind(ip, port [, max_datagram]) -> UDP */
static int stream_udp_bind(lua_State *L) {
  struct sockaddr_storage ss;
  int port = check_port(L, 2, 1), rc;
  size_t maxd = opt_size(L, 3, SLAB_SIZE, 1);
  lunio_loop *loop = lunio__target_loop(L);
  stream_loop *sl;
  udp_ud *ud;
  udp *u;
  check_ip(L, 1, port, &ss);
  sl = sl_get(L, loop);
  ud = lua_newuserdatauv(L, sizeof *ud, 0);
  ud->u = NULL;
  luaL_setmetatable(L, UDP_MT);
  u = calloc(1, sizeof *u);
  if (u == NULL)
    return luaL_error(L, "not enough memory");
  rc = uv_udp_init(lunio__uv(loop), &u->h);
  if (rc < 0) {
    free(u);
    return lunio__uv_error_raise(L, rc, "socket");
  }
  u->h.data = u;
  u->loop = loop;
  u->sl = sl;
  u->max_dgram = maxd;
  rc = uv_udp_bind(&u->h, (struct sockaddr *)&ss, 0);
  if (rc < 0) {
    uv_close((uv_handle_t *)&u->h, on_udp_closed);
    lunio__uv_error_new(L, rc, "bind");
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "host");
    lua_pushinteger(L, port);
    lua_setfield(L, -2, "port");
    return lua_error(L);
  }
  ud->u = u;
  u->ud = ud;
  sl->nopen++;
  lunio__resource_add(loop, &u->res, &udp_resource);
  return 1;
}

static void on_udp_send(uv_udp_send_t *req, int status) {
  sreq *r = container_of(req, sreq, req);
  (void)status; /* datagrams may be lost; so may their errors */
  r->u->sendq -= r->len;
  lunio__io_end(r->u->loop);
  free(r);
}

/* udp:send(data, ip, port): never suspends; what the socket cannot take
 * now is queued (up to 1 MiB, then kind "enobufs"). */
static int udp_send(lua_State *L) {
  udp *u = check_udp(L, 1);
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  int port = check_port(L, 4, 1), rc;
  luaL_argcheck(L, len <= 65535, 2, "larger than a datagram can be");
  struct sockaddr_storage ss;
  uv_buf_t buf = uv_buf_init((char *)p, (unsigned)len);
  sreq *r;
  check_ip(L, 3, port, &ss);
  rc = uv_udp_try_send(&u->h, &buf, 1, (struct sockaddr *)&ss);
  if (rc >= 0)
    return 0;
  if (rc != UV_EAGAIN)
    return lunio__uv_error_raise(L, rc, "send");
  if (u->sendq + len > UDP_SEND_MAX_BYTES)
    return lunio__error_raise(L, "enobufs",
                              "send: the UDP send queue is full (%d bytes)",
                              (int)u->sendq);
  r = malloc(sizeof *r + len);
  if (r == NULL)
    return luaL_error(L, "not enough memory");
  r->u = u;
  r->len = len;
  memcpy(r->data, p, len);
  buf = uv_buf_init(r->data, (unsigned)len);
  rc =
      uv_udp_send(&r->req, &u->h, &buf, 1, (struct sockaddr *)&ss, on_udp_send);
  if (rc < 0) {
    free(r);
    return lunio__uv_error_raise(L, rc, "send");
  }
  u->sendq += len;
  lunio__io_begin(u->loop);
  return 0;
}

static void udp_reader_on_cancel(lunio_task *t, void *data) {
  udp *u = data;
  (void)t;
  u->reader = NULL;
  u->read_busy = NULL;
}

static int udp_recv_k(lua_State *L, int status, lua_KContext ctx);

static int udp_recv_wait(lua_State *L) {
  udp *u = check_udp(L, 1);
  lunio_task *t;
  int rc;
  if (u->read_busy != NULL)
    return lunio__error_raise(L, "invalid_state",
                              "another task is already receiving");
  if (u->head != NULL) {
    dgram *d = u->head;
    u->head = d->next;
    if (u->head == NULL)
      u->tail = NULL;
    u->qcount--;
    u->qbytes -= d->len;
    if (u->started && !u->receiving &&
        uv_udp_recv_start(&u->h, on_udp_alloc, on_udp_recv) == 0)
      u->receiving = 1;
    if (d->truncated) {
      lunio__error_new(L, "emsgsize",
                       "a datagram larger than the receive buffer (%d "
                       "bytes) was truncated",
                       (int)u->max_dgram);
      lua_pushlstring(L, d->data, d->len);
      lua_setfield(L, -2, "partial");
      lunio__push_sockaddr(L, (const struct sockaddr *)&d->from);
      lua_setfield(L, -3, "port");
      lua_setfield(L, -2, "host");
      free(d);
      return lua_error(L);
    }
    lua_pushlstring(L, d->data, d->len);
    lunio__push_sockaddr(L, (const struct sockaddr *)&d->from);
    free(d);
    return 3;
  }
  if (u->recv_err != 0) {
    rc = u->recv_err;
    u->recv_err = 0; /* ICMP errors and the like are not sticky */
    return lunio__uv_error_raise(L, rc, "recv");
  }
  if (!u->receiving) {
    rc = uv_udp_recv_start(&u->h, on_udp_alloc, on_udp_recv);
    if (rc < 0)
      return lunio__uv_error_raise(L, rc, "recv");
    u->receiving = u->started = 1;
  }
  t = current_task(L, u->loop, "recv");
  u->reader = t;
  u->read_busy = t;
  return lunio__park_c(L, t, udp_reader_on_cancel, u, 0, udp_recv_k);
}

static int udp_recv_k(lua_State *L, int status, lua_KContext ctx) {
  udp_ud *ud = lua_touserdata(L, 1);
  (void)status;
  (void)ctx;
  if (ud->u != NULL) {
    ud->u->read_busy = NULL;
    ud->u->reader = NULL;
  }
  lunio__resumed(L, lunio__task_of(L));
  return udp_recv_wait(L);
}

/* udp:recv() -> data, host, port (waits for the next datagram) */
static int udp_recv(lua_State *L) {
  check_udp(L, 1);
  lua_settop(L, 1);
  return udp_recv_wait(L);
}

static int udp_sockname(lua_State *L) {
  udp *u = check_udp(L, 1);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  int rc = uv_udp_getsockname(&u->h, (struct sockaddr *)&ss, &len);
  if (rc < 0)
    return lunio__uv_error_raise(L, rc, "sockname");
  return lunio__push_sockaddr(L, (const struct sockaddr *)&ss);
}

static int udp_lua_close(lua_State *L) {
  udp_ud *ud = to_udp(L, 1);
  if (ud->u != NULL)
    udp_close(ud->u);
  return 0;
}

static int udp_closed(lua_State *L) {
  lua_pushboolean(L, to_udp(L, 1)->u == NULL);
  return 1;
}

static int udp_tostring(lua_State *L) {
  udp_ud *ud = to_udp(L, 1);
  lua_pushfstring(L, "lunio.UDP<%s>: %p", ud->u ? "open" : "closed",
                  (void *)ud);
  return 1;
}

/* ---- module functions --------------------------------------------------- */

/* is_ip(s) -> "inet" | "inet6" | nil */
static int stream_is_ip(lua_State *L) {
  struct sockaddr_storage ss;
  size_t len;
  const char *s = lua_tolstring(L, 1, &len);
  if (s == NULL || strlen(s) != len || lunio__parse_ip(s, 0, &ss) != 0)
    lua_pushnil(L);
  else
    lua_pushstring(L, ss.ss_family == AF_INET6 ? "inet6" : "inet");
  return 1;
}

/* report(ctx): hands ctx to the running loop's exception handler */
static int stream_report(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lunio__report(L, lunio__target_loop(L));
  return 0;
}

/* open_count(loop) -> streams, servers and UDP sockets not closed */
static int stream_open_count(lua_State *L) {
  lunio_loop *loop = luaL_checkudata(L, 1, LUNIO_LOOP_MT);
  stream_loop *sl = lunio__loop_ext_peek(loop, &stream_ext);
  lua_pushinteger(L, sl ? sl->nopen : 0);
  return 1;
}

/* ---- for the process module ---------------------------------------------- */

uv_pipe_t *lunio__stream_new_pipe(lua_State *L, lunio_loop *loop) {
  return &new_stream(L, loop, K_PIPE, &default_stream_opts)->u.pipe;
}

void lunio__stream_close_at(lua_State *L, int idx) {
  stream_ud *ud = luaL_checkudata(L, idx, STREAM_MT);
  if (ud->s != NULL)
    stream_lua_close(ud->s, C_NOW);
}

/* ---- registration -------------------------------------------------------- */

static const luaL_Reg stream_methods[] = {{"read", stream_read},
                                          {"read_exactly", stream_read_exactly},
                                          {"read_until", stream_read_until},
                                          {"read_line", stream_read_line},
                                          {"read_all", stream_read_all},
                                          {"lines", stream_lines},
                                          {"write", stream_write},
                                          {"drain", stream_drain},
                                          {"shutdown", stream_shutdown},
                                          {"close", stream_close},
                                          {"abort", stream_abort},
                                          {"closed", stream_closed},
                                          {"peername", stream_peername},
                                          {"sockname", stream_sockname},
                                          {"set_nodelay", stream_set_nodelay},
                                          {"buffer_info", stream_buffer_info},
                                          {NULL, NULL}};

static const luaL_Reg listener_methods[] = {{"close", listener_lua_close},
                                            {"sockname", listener_sockname},
                                            {"stats", listener_stats},
                                            {"closed", listener_closed},
                                            {NULL, NULL}};

static const luaL_Reg udp_methods[] = {
    {"send", udp_send},         {"recv", udp_recv},
    {"sockname", udp_sockname}, {"close", udp_lua_close},
    {"closed", udp_closed},     {NULL, NULL}};

static const luaL_Reg funcs[] = {{"tcp_connect", stream_tcp_connect},
                                 {"pipe_connect", stream_pipe_connect},
                                 {"tcp_listen", stream_tcp_listen},
                                 {"pipe_listen", stream_pipe_listen},
                                 {"udp_bind", stream_udp_bind},
                                 {"is_ip", stream_is_ip},
                                 {"report", stream_report},
                                 {"open_count", stream_open_count},
                                 {NULL, NULL}};

/* Makes the metatable `name` with methods (each gets the metatable's
 * address as upvalue 1, see to_stream) in a separate __index table, and
 * stores that table in the module table at the top under methods[key]. */
static void new_type(lua_State *L, const char *name, const luaL_Reg *methods,
                     lua_CFunction gc, lua_CFunction close,
                     lua_CFunction tostring, const char *key) {
  int mod = lua_gettop(L);
  luaL_newmetatable(L, name);
  lua_newtable(L);
  lua_pushlightuserdata(L, (void *)lua_topointer(L, -2));
  luaL_setfuncs(L, methods, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__index");
  lua_getfield(L, mod, "methods");
  lua_insert(L, -2);
  lua_setfield(L, -2, key);
  lua_pop(L, 1);
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__gc");
  lua_pushlightuserdata(L, (void *)lua_topointer(L, -1));
  lua_pushcclosure(L, close, 1);
  lua_setfield(L, -2, "__close");
  lua_pushlightuserdata(L, (void *)lua_topointer(L, -1));
  lua_pushcclosure(L, tostring, 1);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}

static int listener_gc(lua_State *L) {
  (void)L; /* anchored while open: collected only once closed */
  return 0;
}

static int udp_gc(lua_State *L) {
  udp_ud *ud = lua_touserdata(L, 1);
  if (ud->u != NULL)
    udp_close(ud->u);
  return 0;
}

void lunio__open_stream(lua_State *L) {
  luaL_newlib(L, funcs);
  lua_newtable(L);
  lua_setfield(L, -2, "methods");
  new_type(L, STREAM_MT, stream_methods, stream_gc, stream_close,
           stream_tostring, "Stream");
  new_type(L, LISTENER_MT, listener_methods, listener_gc, listener_lua_close,
           listener_tostring, "Listener");
  new_type(L, UDP_MT, udp_methods, udp_gc, udp_lua_close, udp_tostring, "UDP");
}
