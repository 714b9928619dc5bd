/*
 * thread.c - lunio.to_thread: runs a Lua function in a worker thread, in
 * the worker's own lua_State, and awaits its results.
 *
 * Values cross between states as bytes: the caller's arguments and the
 * function (lua_dump) are encoded on the loop's thread, decoded by the
 * worker, and the results come back the same way. Only nil, booleans,
 * numbers (integers stay integers), strings and tables of those travel;
 * anything else is a bad argument naming where it sits ("args[2].x").
 *
 * Each loop that uses to_thread gets a pool of worker threads of its own
 * (at most LUNIO_THREADS, default: the number of CPUs), apart from libuv's
 * pool, so that CPU-bound work never starves fs and DNS requests. Threads
 * start on demand and keep their lua_State (standard libraries open,
 * package.path and package.cpath set from the caller's at each call) for
 * the next calls.
 *
 * Completion: a worker puts the finished job on the pool's done list and
 * pokes the loop's uv_async_t; its callback, on the loop's thread, wakes
 * the awaiting task, whose continuation decodes the results into the
 * task's coroutine. No Lua runs in another thread's context, and no task
 * is touched outside the loop's thread. The async handle exists only while
 * jobs are out (an idle loop shows no active handle, and uv_run waits for
 * it exactly while a job can still complete).
 *
 * Lifetime: the pool's shared state (queue, done list, mutex) is malloc'd
 * and counted: one reference for the loop, one per thread. Closing the
 * loop sets `gone` under the mutex and only then closes the async handle,
 * so a worker (which checks `gone` under the same mutex before poking it)
 * never touches the loop's memory afterwards; running jobs are finished
 * and dropped by their worker, idle workers exit, and the last one out
 * frees the shared state. Threads are detached: closing a loop never
 * waits for a function that may run for a long time.
 *
 * Cancelling the awaiting task takes a queued job back, or lets a running
 * one finish (a Lua function cannot be stopped safely from outside) and
 * drops its results; the worker is then reused.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "internal.h"

#define MAX_THREADS 256
#define MAX_DEPTH 100 /* table nesting, both ways */

/* ---- encoded values ----------------------------------------------------- */

enum { V_NIL, V_FALSE, V_TRUE, V_INT, V_FLOAT, V_STR, V_TABLE, V_END };

typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_add(sbuf *b, const void *p, size_t n) {
  if (b->oom)
    return;
  if (b->cap - b->len < n) {
    size_t cap = b->cap ? b->cap : 256;
    char *q;
    while (cap - b->len < n) {
      if (cap > SIZE_MAX / 2) {
        b->oom = 1;
        return;
      }
      cap *= 2;
    }
    q = realloc(b->p, cap);
    if (q == NULL) {
      b->oom = 1;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

static void sb_tag(sbuf *b, int tag) {
  unsigned char c = (unsigned char)tag;
  sb_add(b, &c, 1);
}

static void sb_string(sbuf *b, const char *s, size_t len) {
  sb_tag(b, V_STR);
  sb_add(b, &len, sizeof len);
  sb_add(b, s, len);
}

static void sb_integer(sbuf *b, lua_Integer i) {
  sb_tag(b, V_INT);
  sb_add(b, &i, sizeof i);
}

/* Why a value could not be encoded. */
enum { E_OK, E_TYPE, E_KEY, E_CYCLE, E_DEPTH, E_MEM };

typedef struct enc {
  sbuf *b;
  int depth;
  int err, bad_type;
  const void *tables[MAX_DEPTH]; /* the tables being encoded, outermost first */
  int keys[MAX_DEPTH];           /* stack index of the key at each level */
} enc;

/* Encodes the value at idx. Never raises (it may run in a worker): on
 * failure it returns the error and leaves the keys of the path to the
 * culprit on the stack (enc.keys) for the caller to name it. */
static int encode(lua_State *L, int idx, enc *e) {
  int type = lua_type(L, idx);
  switch (type) {
  case LUA_TNIL:
    sb_tag(e->b, V_NIL);
    break;
  case LUA_TBOOLEAN:
    sb_tag(e->b, lua_toboolean(L, idx) ? V_TRUE : V_FALSE);
    break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      sb_integer(e->b, lua_tointeger(L, idx));
    else {
      lua_Number n = lua_tonumber(L, idx);
      sb_tag(e->b, V_FLOAT);
      sb_add(e->b, &n, sizeof n);
    }
    break;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    sb_string(e->b, s, len);
    break;
  }
  case LUA_TTABLE: {
    const void *p = lua_topointer(L, idx);
    int i, level = e->depth;
    idx = lua_absindex(L, idx);
    for (i = 0; i < level; i++)
      if (e->tables[i] == p)
        return e->err = E_CYCLE;
    if (level == MAX_DEPTH)
      return e->err = E_DEPTH;
    if (!lua_checkstack(L, 3))
      return e->err = E_MEM;
    e->tables[level] = p;
    e->depth++;
    sb_tag(e->b, V_TABLE);
    lua_pushnil(L);
    e->keys[level] = lua_gettop(L);
    while (lua_next(L, idx)) {
      int kt = lua_type(L, -2);
      if (kt != LUA_TSTRING && kt != LUA_TNUMBER && kt != LUA_TBOOLEAN) {
        e->bad_type = kt;
        return e->err = E_KEY;
      }
      if (encode(L, -2, e) || encode(L, -1, e))
        return e->err;
      lua_pop(L, 1);
    }
    sb_tag(e->b, V_END);
    e->depth--;
    break;
  }
  default:
    e->bad_type = type;
    return e->err = E_TYPE;
  }
  return e->b->oom ? (e->err = E_MEM) : E_OK;
}

/* Writes "<root>.k[1]..." for the path of a failed encode into out. */
static void name_path(lua_State *L, const enc *e, const char *root, char *out,
                      size_t size) {
  size_t n = (size_t)snprintf(out, size, "%s", root);
  int i;
  for (i = 0; i < e->depth && n < size; i++) {
    int k = e->keys[i];
    const char *s;
    size_t len, j;
    int ident;
    switch (lua_type(L, k)) {
    case LUA_TSTRING:
      s = lua_tolstring(L, k, &len);
      ident = len > 0 && len <= 40 && !(s[0] >= '0' && s[0] <= '9');
      for (j = 0; j < len && ident; j++)
        ident = s[j] == '_' || (s[j] >= 'a' && s[j] <= 'z') ||
                (s[j] >= 'A' && s[j] <= 'Z') || (s[j] >= '0' && s[j] <= '9');
      if (ident)
        n += (size_t)snprintf(out + n, size - n, ".%s", s);
      else
        n += (size_t)snprintf(out + n, size - n, "[\"%.*s%s\"]",
                              (int)(len > 24 ? 24 : len), s,
                              len > 24 ? "..." : "");
      break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, k))
        n += (size_t)snprintf(out + n, size - n, "[" LUA_INTEGER_FMT "]",
                              lua_tointeger(L, k));
      else
        n += (size_t)snprintf(out + n, size - n, "[" LUA_NUMBER_FMT "]",
                              lua_tonumber(L, k));
      break;
    case LUA_TBOOLEAN:
      n += (size_t)snprintf(out + n, size - n, "[%s]",
                            lua_toboolean(L, k) ? "true" : "false");
      break;
    default: /* the bad key itself: the path ends at its table */
      break;
    }
  }
}

/* Describes the failed encode (path and reason) into out. */
static void describe(lua_State *L, const enc *e, const char *root, char *out,
                     size_t size) {
  char path[256];
  name_path(L, e, root, path, sizeof path);
  switch (e->err) {
  case E_TYPE:
    snprintf(out, size, "%s is a %s, which cannot be copied to a thread", path,
             lua_typename(L, e->bad_type));
    break;
  case E_KEY:
    snprintf(out, size, "%s has a %s key, which cannot be copied", path,
             lua_typename(L, e->bad_type));
    break;
  case E_CYCLE:
    snprintf(out, size, "%s refers back to a table that contains it", path);
    break;
  case E_DEPTH:
    snprintf(out, size, "%s: tables nested more than %d deep", path, MAX_DEPTH);
    break;
  default:
    snprintf(out, size, "%s: not enough memory", path);
  }
}

/* Encodes the n values at the top of L (left in place) as a count and the
 * values; on failure describes the culprit (named root[i]) into msg and
 * returns the index (1-based) of the value at fault. */
static int encode_values(lua_State *L, int n, sbuf *b, const char *root,
                         char *msg, size_t size) {
  int base = lua_gettop(L) - n, i;
  sb_integer(b, n);
  for (i = 1; i <= n; i++) {
    enc e;
    char name[32];
    e.b = b;
    e.depth = 0;
    e.err = E_OK;
    if (encode(L, base + i, &e) != E_OK) {
      snprintf(name, sizeof name, "%s[%d]", root, i);
      describe(L, &e, name, msg, size);
      lua_settop(L, base + n);
      return i;
    }
  }
  return 0;
}

typedef struct reader {
  const char *p; /* bytes written by sb_add: no bounds to check */
} reader;

static void rd(reader *r, void *out, size_t n) {
  memcpy(out, r->p, n); /* the bytes were written by sb_add: they are there */
  r->p += n;
}

/* Pushes the next value; may raise (memory), so callers are protected. */
static void decode(lua_State *L, reader *r) {
  unsigned char tag = (unsigned char)*r->p++;
  switch (tag) {
  case V_NIL:
    lua_pushnil(L);
    break;
  case V_FALSE:
  case V_TRUE:
    lua_pushboolean(L, tag == V_TRUE);
    break;
  case V_INT: {
    lua_Integer i;
    rd(r, &i, sizeof i);
    lua_pushinteger(L, i);
    break;
  }
  case V_FLOAT: {
    lua_Number n;
    rd(r, &n, sizeof n);
    lua_pushnumber(L, n);
    break;
  }
  case V_STR: {
    size_t len;
    rd(r, &len, sizeof len);
    lua_pushlstring(L, r->p, len);
    r->p += len;
    break;
  }
  default: /* V_TABLE */
    luaL_checkstack(L, 3, "table too deep");
    lua_newtable(L);
    while (*r->p != V_END) {
      decode(L, r);
      decode(L, r);
      lua_rawset(L, -3);
    }
    r->p++;
  }
}

/* Pushes the values of a count-and-values block; returns their count. */
static int decode_values(lua_State *L, reader *r) {
  lua_Integer n, i;
  r->p++; /* V_INT */
  rd(r, &n, sizeof n);
  luaL_checkstack(L, (int)n, "too many values");
  for (i = 0; i < n; i++)
    decode(L, r);
  return (int)n;
}

/* ---- the pool ----------------------------------------------------------- */

enum { J_QUEUED, J_RUNNING, J_DONE };

typedef struct tjob tjob;
typedef struct tpool tpool;

struct tjob {
  tjob *next, *prev;      /* queue or done list; once woken, tl->delivered */
  struct thread_loop *tl; /* loop thread only */
  lunio_loop *loop;       /* loop thread only */
  lunio_task *task;       /* loop thread only: NULL once the task left */
  char *in;               /* path, cpath, function, arguments */
  size_t in_len;
  char *out; /* results, or the error value when failed */
  size_t out_len;
  int failed;
  int state; /* under the pool's mutex */
};

struct tpool {
  uv_mutex_t mu;
  uv_cond_t cv;
  tjob *queue, *queue_last; /* waiting for a worker */
  tjob *done;               /* finished, for the loop (newest first) */
  int nqueue;
  int nthreads, waiting, max;
  int refs;          /* the loop, and each thread */
  int gone;          /* the loop closed: drop results, leave */
  uv_async_t *async; /* the loop's; set while jobs are out and !gone */
};

/* The module's per-loop state. */
typedef struct thread_loop {
  tpool *pool;
  uv_async_t *async; /* while outstanding > 0 */
  int outstanding;   /* jobs submitted and not yet delivered or dropped */
  /* Jobs whose task was woken and has not resumed yet: if the loop is torn
   * down before it does (a collected loop), tl_close frees them. */
  tjob *delivered;
} thread_loop;

static void job_free(tjob *j) {
  if (j == NULL)
    return;
  free(j->in);
  free(j->out);
  free(j);
}

static void pool_release(tpool *p) {
  int last;
  uv_mutex_lock(&p->mu);
  last = --p->refs == 0;
  uv_mutex_unlock(&p->mu);
  if (last) {
    uv_cond_destroy(&p->cv);
    uv_mutex_destroy(&p->mu);
    free(p);
  }
}

/* ---- the worker's side -------------------------------------------------- */

static const char fn_cache_key = 'F'; /* worker: dump -> function */
static const char paths_key = 'P';    /* worker: {path, cpath} last set */

/* Message handler: string errors get the worker's traceback; other values
 * that are neither strings nor tables become a description (lua.c). */
static int worker_msgh(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING)
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
  else if (lua_type(L, 1) != LUA_TTABLE) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  return 1;
}

/* Sets package.path or package.cpath (field) to the string at idx, if it
 * changed since the last job. */
static void set_path(lua_State *L, int idx, const char *field, int slot) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &paths_key);
  lua_rawgeti(L, -1, slot);
  if (!lua_rawequal(L, -1, idx) && lua_rawlen(L, idx) > 0) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, "package") == LUA_TTABLE) {
      lua_pushvalue(L, idx);
      lua_setfield(L, -2, field);
    }
    lua_pop(L, 2);
    lua_pushvalue(L, idx);
    lua_rawseti(L, -3, slot);
  }
  lua_pop(L, 2);
}

/* In protected mode: decodes the job and calls the function; returns its
 * results. */
static int worker_call(lua_State *L) {
  tjob *j = lua_touserdata(L, 1);
  reader r;
  int nargs;
  r.p = j->in;
  lua_settop(L, 0);
  decode(L, &r); /* 1: package.path */
  decode(L, &r); /* 2: package.cpath */
  set_path(L, 1, "path", 1);
  set_path(L, 2, "cpath", 2);
  decode(L, &r); /* 3: the function's dump */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &fn_cache_key);
  lua_pushvalue(L, 3);
  if (lua_rawget(L, -2) != LUA_TFUNCTION) {
    size_t len;
    const char *dump = lua_tolstring(L, 3, &len);
    lua_pop(L, 1);
    /* lua_load sets the first upvalue (_ENV, the only one allowed) to
     * this state's globals. */
    if (luaL_loadbufferx(L, dump, len, "=to_thread", "b") != LUA_OK)
      return lua_error(L);
    /* Keep the cache small: cache[0] counts its functions. */
    lua_rawgeti(L, 4, 0);
    if (lua_tointeger(L, -1) >= 64) {
      lua_newtable(L);
      lua_replace(L, 4);
      lua_pushvalue(L, 4);
      lua_rawsetp(L, LUA_REGISTRYINDEX, &fn_cache_key);
    }
    lua_pushinteger(L, lua_tointeger(L, -1) + 1);
    lua_rawseti(L, 4, 0);
    lua_pop(L, 1);
    lua_pushvalue(L, 3);
    lua_pushvalue(L, -2);
    lua_rawset(L, 4);
  }
  lua_settop(L, 5); /* drop path, cpath, dump and the cache */
  lua_rotate(L, 1, 1);
  lua_settop(L, 1);
  nargs = decode_values(L, &r);
  lua_call(L, nargs, LUA_MULTRET);
  return lua_gettop(L);
}

static int worker_open(lua_State *L) {
  luaL_openlibs(L);
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &fn_cache_key);
  lua_createtable(L, 2, 0);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &paths_key);
  return 0;
}

/* A worker's state: standard libraries and the caches, made in protected
 * mode (an error outside it would abort the process). */
static lua_State *worker_state(void) {
  lua_State *L = luaL_newstate();
  if (L == NULL)
    return NULL;
  lua_pushcfunction(L, worker_open);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    lua_close(L);
    return NULL;
  }
  return L;
}

/* Sets the job's result to an error message (no Lua involved). */
static void job_fail_msg(tjob *j, const char *msg) {
  sbuf b = {NULL, 0, 0, 0};
  sb_integer(&b, 1);
  sb_string(&b, msg, strlen(msg));
  free(j->out);
  j->out = b.oom ? NULL : b.p;
  j->out_len = b.len;
  j->failed = 1;
  if (b.oom)
    free(b.p);
}

/* Runs j in the worker's state L (created on first use). */
static void run_job(lua_State **Lp, tjob *j) {
  lua_State *L = *Lp;
  sbuf b = {NULL, 0, 0, 0};
  char msg[512];
  int status, n;
  if (L == NULL && (L = *Lp = worker_state()) == NULL) {
    job_fail_msg(j, "to_thread: cannot create a Lua state (not enough memory)");
    return;
  }
  lua_settop(L, 0);
  lua_pushcfunction(L, worker_msgh);
  lua_pushcfunction(L, worker_call);
  lua_pushlightuserdata(L, j);
  status = lua_pcall(L, 1, LUA_MULTRET, 1);
  n = lua_gettop(L) - 1;
  if (encode_values(L, n, &b, status == LUA_OK ? "results" : "error", msg,
                    sizeof msg) != 0) {
    char full[600];
    free(b.p);
    snprintf(full, sizeof full, "to_thread: cannot copy the %s back: %s",
             status == LUA_OK ? "results" : "error", msg);
    job_fail_msg(j, full);
  } else {
    j->out = b.p;
    j->out_len = b.len;
    j->failed = status != LUA_OK;
  }
  lua_settop(L, 0);
  /* A big job leaves garbage that nothing would collect while the worker
   * waits: collect it now. */
  if (lua_gc(L, LUA_GCCOUNT) > 1024)
    lua_gc(L, LUA_GCCOLLECT);
}

static void worker_main(void *arg) {
  tpool *p = arg;
  lua_State *L = NULL;
  uv_mutex_lock(&p->mu);
  for (;;) {
    tjob *j;
    while (p->queue == NULL && !p->gone) {
      p->waiting++;
      uv_cond_wait(&p->cv, &p->mu);
      p->waiting--;
    }
    if (p->gone)
      break;
    j = p->queue;
    p->queue = j->next;
    if (p->queue == NULL)
      p->queue_last = NULL;
    p->nqueue--;
    j->next = NULL;
    j->state = J_RUNNING;
    uv_mutex_unlock(&p->mu);
    run_job(&L, j);
    uv_mutex_lock(&p->mu);
    j->state = J_DONE;
    if (p->gone)
      job_free(j); /* nobody waits any more */
    else {
      j->next = p->done;
      p->done = j;
      uv_async_send(p->async);
    }
  }
  p->nthreads--;
  uv_mutex_unlock(&p->mu);
  if (L != NULL)
    lua_close(L);
  pool_release(p);
}

/* ---- the loop's side ---------------------------------------------------- */

static void on_async(uv_async_t *a);

static void async_closed(uv_handle_t *h) { free(h); }

static void tl_close(lunio_loop *loop, void *ext) {
  thread_loop *tl = ext;
  tpool *p = tl->pool;
  (void)loop;
  if (p != NULL) {
    tjob *queued, *done;
    uv_mutex_lock(&p->mu);
    p->gone = 1;
    queued = p->queue;
    done = p->done;
    p->queue = p->queue_last = p->done = NULL;
    p->nqueue = 0;
    uv_cond_broadcast(&p->cv);
    uv_mutex_unlock(&p->mu);
    /* Their tasks were settled already (each on_cancel detached its
     * job); these are the orphans. */
    while (queued != NULL) {
      tjob *next = queued->next;
      job_free(queued);
      queued = next;
    }
    while (done != NULL) {
      tjob *next = done->next;
      job_free(done);
      done = next;
    }
    tl->pool = NULL;
    pool_release(p);
  }
  /* Woken tasks that were settled before they resumed. */
  while (tl->delivered != NULL) {
    tjob *j = tl->delivered;
    tl->delivered = j->next;
    job_free(j);
  }
  if (tl->async != NULL)
    uv_close((uv_handle_t *)tl->async, async_closed);
  tl->async = NULL;
}

static const lunio_ext_ops thread_ext = {"to_thread", sizeof(thread_loop),
                                         tl_close, NULL};

static int pool_max(void) {
  const char *env = getenv("LUNIO_THREADS");
  long n = env != NULL ? strtol(env, NULL, 10) : 0;
  if (n <= 0)
    n = (long)uv_available_parallelism();
  return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

/* The loop's pool, made on first use; NULL when out of memory (or the loop
 * is closing). */
static thread_loop *tl_get(lunio_loop *loop) {
  thread_loop *tl;
  tpool *p;
  if (loop->closing || loop->closed) /* tl_close ran, or will */
    return NULL;
  tl = lunio__loop_ext(loop, &thread_ext);
  if (tl == NULL || tl->pool != NULL)
    return tl;
  p = calloc(1, sizeof *p);
  if (p == NULL)
    return NULL;
  if (uv_mutex_init(&p->mu) != 0) {
    free(p);
    return NULL;
  }
  if (uv_cond_init(&p->cv) != 0) {
    uv_mutex_destroy(&p->mu);
    free(p);
    return NULL;
  }
  p->max = pool_max();
  p->refs = 1;
  tl->pool = p;
  return tl;
}

/* A job goes out: the first one makes the async handle the workers poke
 * (and that keeps uv_run waiting). 0 or a libuv error. */
static int outstanding_inc(thread_loop *tl, lunio_loop *loop) {
  if (tl->outstanding == 0) {
    uv_async_t *a = malloc(sizeof *a);
    int rc =
        a == NULL ? UV_ENOMEM : uv_async_init(lunio__uv(loop), a, on_async);
    if (rc != 0) {
      free(a);
      return rc;
    }
    a->data = tl;
    tl->async = a;
    uv_mutex_lock(&tl->pool->mu);
    tl->pool->async = a;
    uv_mutex_unlock(&tl->pool->mu);
  }
  tl->outstanding++;
  lunio__io_begin(loop);
  return 0;
}

/* A job was delivered or dropped: with none left in the pool, no worker
 * can poke the handle any more, so it closes. */
static void outstanding_dec(thread_loop *tl, lunio_loop *loop) {
  lunio__io_end(loop);
  if (--tl->outstanding > 0)
    return;
  uv_mutex_lock(&tl->pool->mu);
  tl->pool->async = NULL;
  uv_mutex_unlock(&tl->pool->mu);
  uv_close((uv_handle_t *)tl->async, async_closed);
  tl->async = NULL;
}

/* Queues j, starting a thread when every thread is busy; 0 or an error. */
static int pool_submit(tpool *p, tjob *j) {
  int rc = 0;
  uv_mutex_lock(&p->mu);
  j->state = J_QUEUED;
  j->next = NULL;
  if (p->queue_last != NULL)
    p->queue_last->next = j;
  else
    p->queue = j;
  p->queue_last = j;
  p->nqueue++;
  if (p->nqueue > p->waiting && p->nthreads < p->max) {
    uv_thread_t tid;
    p->refs++;
    if (uv_thread_create(&tid, worker_main, p) == 0) {
      pthread_detach(tid);
      p->nthreads++;
    } else {
      p->refs--;
      if (p->nthreads == 0) { /* nobody would ever run it */
        p->queue = p->queue_last = NULL;
        p->nqueue = 0;
        rc = UV_EAGAIN;
      }
    }
  }
  uv_cond_signal(&p->cv);
  uv_mutex_unlock(&p->mu);
  return rc;
}

/* The finished jobs: wake their tasks, or drop the orphans. */
static void on_async(uv_async_t *a) {
  thread_loop *tl = a->data;
  tpool *p = tl->pool;
  tjob *list, *rev = NULL;
  if (p == NULL)
    return;
  uv_mutex_lock(&p->mu);
  list = p->done;
  p->done = NULL;
  uv_mutex_unlock(&p->mu);
  while (list != NULL) { /* oldest first */
    tjob *next = list->next;
    list->next = rev;
    rev = list;
    list = next;
  }
  while (rev != NULL) {
    tjob *j = rev;
    lunio_loop *loop = j->loop;
    rev = j->next;
    j->next = NULL;
    outstanding_dec(tl, loop);
    if (j->task != NULL) {
      j->prev = NULL;
      j->next = tl->delivered;
      if (tl->delivered != NULL)
        tl->delivered->prev = j;
      tl->delivered = j;
      lunio__wake(lunio__loop_state(loop), j->task, 0, 0);
    } else
      job_free(j);
  }
}

/* The awaiting task leaves: take a queued job back, or let it finish and
 * be dropped by on_async. */
static void job_on_cancel(lunio_task *t, void *data) {
  tjob *j = data;
  thread_loop *tl = lunio__loop_ext_peek(t->loop, &thread_ext);
  tpool *p = tl->pool;
  int taken = 0;
  j->task = NULL;
  uv_mutex_lock(&p->mu);
  if (j->state == J_QUEUED) {
    tjob **q, *prev = NULL;
    for (q = &p->queue; *q != NULL; prev = *q, q = &(*q)->next)
      if (*q == j) {
        *q = j->next;
        if (p->queue_last == j)
          p->queue_last = prev;
        p->nqueue--;
        taken = 1;
        break;
      }
  }
  uv_mutex_unlock(&p->mu);
  if (taken) {
    outstanding_dec(tl, t->loop);
    job_free(j);
  }
}

/* In protected mode: pushes the job's results (or its error value). */
static int push_outcome(lua_State *L) {
  tjob *j = lua_touserdata(L, 1);
  reader r;
  lua_settop(L, 0);
  r.p = j->out;
  return decode_values(L, &r);
}

/* The frame is [fn, args...]; ctx is the job. */
static int to_thread_k(lua_State *L, int status, lua_KContext ctx) {
  tjob *j = (tjob *)ctx;
  lunio_task *t = lunio__task_of(L);
  int base = lua_gettop(L), failed;
  (void)status;
  /* Cancelled while parked: the job is not ours any more (job_on_cancel). */
  if (t->flags & LUNIO_F_WAKE_ERROR)
    lunio__resumed(L, t);
  /* Woken by on_async: the job is ours now. */
  if (j->prev != NULL)
    j->prev->next = j->next;
  else
    j->tl->delivered = j->next;
  if (j->next != NULL)
    j->next->prev = j->prev;
  j->next = j->prev = NULL;
  /* Cancelled after the wake-up: drop the results. */
  if (LUNIO_CANCEL_AT_RESUME(t)) {
    job_free(j);
    lunio__resumed(L, t);
    return 0; /* not reached: it raised */
  }
  failed = j->failed;
  if (j->out == NULL) {
    job_free(j);
    return luaL_error(L, "to_thread: not enough memory for the results");
  }
  lua_pushcfunction(L, push_outcome);
  lua_pushlightuserdata(L, j);
  status = lua_pcall(L, 1, LUA_MULTRET, 0);
  job_free(j);
  if (status != LUA_OK || failed)
    return lua_error(L); /* the worker's error is the single value */
  return lua_gettop(L) - base;
}

static const char dump_cache_key = 'D'; /* fn -> its dump (weak keys) */

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  sb_add(ud, p, n);
  return ((sbuf *)ud)->oom;
}

/* Pushes the dump of the Lua function at index 1, checked to have no
 * upvalue but _ENV; cached per function. */
static void push_dump(lua_State *L) {
  const char *name;
  sbuf b = {NULL, 0, 0, 0};
  int i, rc;
  lunio__push_weak_table(L, &dump_cache_key);
  lua_pushvalue(L, 1);
  if (lua_rawget(L, -2) == LUA_TSTRING) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  for (i = 1; (name = lua_getupvalue(L, 1, i)) != NULL; i++) {
    lua_pop(L, 1);
    if (strcmp(name, "_ENV") != 0)
      luaL_argerror(L, 1,
                    lua_pushfstring(L,
                                    "the function has upvalue '%s'; only "
                                    "_ENV can go to a thread (pass values "
                                    "as arguments)",
                                    *name ? name : "?"));
  }
  lua_pushvalue(L, 1); /* lua_dump takes the function at the top */
  rc = lua_dump(L, dump_writer, &b, 0);
  lua_pop(L, 1);
  if (rc != 0 || b.oom) {
    free(b.p);
    luaL_error(L, "to_thread: cannot dump the function");
  }
  lua_pushlstring(L, b.p, b.len);
  free(b.p);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, -2);
  lua_rawset(L, -4);
  lua_remove(L, -2);
}

/* Pushes package[field] of the calling state, or "". */
static void push_package_field(lua_State *L, const char *field) {
  int top = lua_gettop(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "package") == LUA_TTABLE &&
      lua_getfield(L, -1, field) == LUA_TSTRING) {
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
  } else {
    lua_settop(L, top);
    lua_pushliteral(L, "");
  }
}

/* to_thread(fn, ...) -> fn's results, run in a worker thread */
static int core_to_thread(lua_State *L) {
  int nargs = lua_gettop(L) - 1, bad, top;
  char msg[512];
  sbuf b = {NULL, 0, 0, 0};
  thread_loop *tl;
  lunio_task *t;
  tjob *j;
  size_t len;
  const char *s;
  if (lua_type(L, 1) != LUA_TFUNCTION || lua_iscfunction(L, 1))
    return luaL_typeerror(L, 1, "Lua function");
  t = lunio__check_in_task(L, "to_thread");
  top = lua_gettop(L);
  push_dump(L);
  push_package_field(L, "path");
  push_package_field(L, "cpath");
  /* path, cpath and the function first, then the arguments */
  s = lua_tolstring(L, -2, &len);
  sb_string(&b, s, len);
  s = lua_tolstring(L, -1, &len);
  sb_string(&b, s, len);
  s = lua_tolstring(L, -3, &len);
  sb_string(&b, s, len);
  lua_settop(L, top);
  bad = encode_values(L, nargs, &b, "args", msg, sizeof msg);
  if (bad != 0 || b.oom) {
    free(b.p);
    if (bad == 0)
      return luaL_error(L, "not enough memory");
    return luaL_argerror(L, bad + 1, msg);
  }
  tl = tl_get(t->loop);
  j = tl != NULL ? calloc(1, sizeof *j) : NULL;
  if (j == NULL) {
    free(b.p);
    if (tl == NULL && (t->loop->closing || t->loop->closed))
      return lunio__error_raise(L, "closed", "the loop is closed");
    return luaL_error(L, "not enough memory");
  }
  j->tl = tl;
  j->loop = t->loop;
  j->task = t;
  j->in = b.p;
  j->in_len = b.len;
  if (outstanding_inc(tl, t->loop) != 0) {
    job_free(j);
    return luaL_error(L, "not enough memory");
  }
  if (pool_submit(tl->pool, j) != 0) {
    job_free(j);
    outstanding_dec(tl, t->loop);
    return luaL_error(L, "to_thread: cannot start a worker thread");
  }
  return lunio__park_c(L, t, job_on_cancel, j, (lua_KContext)j, to_thread_k);
}

void lunio__open_thread(lua_State *L) {
  lua_pushcfunction(L, core_to_thread);
  lua_setfield(L, -2, "to_thread");
}
