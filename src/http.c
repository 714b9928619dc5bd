/*
 * http.c - HTTP sessions and transfers on libcurl, for lua/lunio/http.lua.
 *
 * Lua types:
 *   lunio.HttpSession   one curl multi handle (connection pool, limits), run
 *                       on the loop by http_multi.c, and one share handle
 *                       (cookie jar, TLS sessions). It is bound to the loop
 *                       that first uses it and is torn down by close(),
 *                       __close, __gc or that loop closing.
 *   lunio.HttpTransfer  one request. It lives on the stack of the task that
 *                       runs fetch, or inside a streamed Response; its __gc
 *                       aborts a transfer still in flight.
 *
 * Threading model (design rules of docs/notes on libcurl + libuv):
 *   - curl callbacks (write, header, progress here; socket, timer and
 *     closesocket in http_multi.c) only touch C state: buffers, flags, uv
 *     handles. No Lua runs in them.
 *   - http_multi.c calls curl_multi_socket_action from uv callbacks only,
 *     then this file's sess_done for each finished transfer and sess_after
 *     for the end of the round: tasks parked on transfers are woken there,
 *     never from a curl callback.
 *
 * Lifetime: the C state of a session (sess) is malloc'd apart from its
 * userdata so the uv handles can outlive it: sess_teardown() cleans the
 * curl handles and closes the engine, whose last close callback frees the
 * struct. A transfer struct is the userdata itself; while its easy handle
 * is in a multi it is linked on the session's active list, and whoever ends
 * it (completion, cancel, abort, session shutdown, __gc) unlinks it first.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_multi.h"

#define SESSION_MT "lunio.HttpSession"
#define XFER_MT "lunio.HttpTransfer"

/* Streamed bodies: pause the transfer above HWM buffered bytes, resume it
 * when the reader has drained below half of it. */
#define STREAM_HWM (1024 * 1024)
/* Most body memory reserved from Content-Length before the data arrives;
 * beyond it the buffer grows as data comes. */
#define BODY_RESERVE_MAX ((curl_off_t)16 << 20)
/* Idle easy handles kept per session for reuse. */
#define MAX_FREE_EASY 128

typedef struct sess sess;
typedef struct xfer xfer;

/* Body buffers kept for reuse: glibc serves each large buffer with a fresh
 * mmap (its dynamic threshold never covers a same-sized request), so a new
 * 1 MiB buffer per response costs 256 page faults; reuse costs none. */
enum { SPARE_MAX = 8 };
#define SPARE_CAP_MAX ((size_t)8 << 20)

/* The module's per-loop state (a loop extension): recycled body buffers.
 * Sessions are the loop's resources; the module-level session is kept in
 * the loop's state table under default_session_key. */
typedef struct http_loop {
  lunio_buf spare[SPARE_MAX];
  int nspare;
} http_loop;

static const char default_session_key = 'H';

/* The Lua side of a session. */
typedef struct sess_ud {
  sess *s;    /* NULL until bound, and again once closed */
  int closed; /* closed explicitly or by its loop */
  long max_conn, max_host;
} sess_ud;

/* An idle easy handle. One that last ran a request made from a template
 * (a request without options: http.lua's spec templates, numbered) keeps
 * that configuration, its header list included, so the next request of
 * the same template and URL scheme only sets its URL and pointers. */
typedef struct easy_slot {
  CURL *e;
  lua_Integer tmpl; /* template it is configured for, or 0 (reset) */
  struct curl_slist *hdrs;
  curl_off_t max_body;
  int https, follow;
} easy_slot;

struct sess {
  lunio_curlm m;      /* the multi handle on the loop (http_multi.c) */
  lunio_resource res; /* registered with the loop while open */
  http_loop *hl;
  sess_ud *ud; /* NULL once the userdata was collected */
  CURLSH *share;
  xfer *active;   /* transfers whose easy handle is in the multi */
  xfer *sig_head; /* transfers with something to tell their task */
  easy_slot *free_easy;
  int nfree;
  int reuse_easy; /* libcurl >= 8.1.0: easy handles may be recycled */
  int nactive;
  int shut;    /* torn down (or tearing down) */
  int verbose; /* LUNIO_CURL_VERBOSE: libcurl's trace on stderr */
};

enum { X_RUNNING = 1, X_DONE, X_ABORTED };

struct xfer {
  sess *s; /* set while active */
  lunio_loop *loop;
  CURL *easy;
  struct curl_slist *hdrs;
  lua_Integer tmpl; /* the template the request was made from, or 0 */
  int https;
  lunio_task *task;    /* parked task, if any */
  xfer *next, *prev;   /* s->active */
  xfer *snext, *sprev; /* s->sig_head */
  int signalled;
  int state;
  int in_multi;
  int stream, want_progress, progress_dirty;
  int headers_ready, location_seen, follow;
  int paused, too_large, write_errno;
  int socket_errno; /* socket() failed with it (EMFILE ...), or 0 */
  const char *abort_kind, *abort_msg;
  CURLcode result;
  FILE *out;
  char *out_path;
  char *req_url, *eff_url;
  lunio_buf body, head;
  curl_off_t received, max_body;
  curl_off_t dlnow, dltotal;
  long status, version;
  curl_off_t times[5];
  char errbuf[CURL_ERROR_SIZE];
};

/* ---- small helpers ----------------------------------------------------- */

static void hl_free(lunio_loop *loop, void *ext);

static const lunio_ext_ops http_ext = {"http", sizeof(http_loop), NULL,
                                       hl_free};

static http_loop *loop_http(lunio_loop *loop) {
  return loop ? lunio__loop_ext_peek(loop, &http_ext) : NULL;
}

/* Gives x's body buffer back for reuse, or frees it. */
static void body_recycle(xfer *x) {
  http_loop *hl = loop_http(x->loop);
  if (hl != NULL && hl->nspare < SPARE_MAX && x->body.cap > 0 &&
      x->body.cap <= SPARE_CAP_MAX) {
    x->body.off = x->body.len = 0;
    hl->spare[hl->nspare++] = x->body;
    memset(&x->body, 0, sizeof x->body);
  } else
    lunio__buf_free(&x->body, NULL);
}

static char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p)
    memcpy(p, s, n);
  return p;
}

/* ---- per-loop state ---------------------------------------------------- */

static http_loop *hl_get(lunio_loop *loop) {
  return lunio__loop_ext(loop, &http_ext);
}

static void hl_free(lunio_loop *loop, void *ext) {
  http_loop *hl = ext;
  (void)loop;
  while (hl->nspare > 0)
    lunio__buf_free(&hl->spare[--hl->nspare], NULL);
}

/* ---- signal list: transfers whose parked task may need a wake-up ------- */

static void sig_push(xfer *x) {
  sess *s = x->s;
  if (x->signalled || s == NULL)
    return;
  x->signalled = 1;
  x->sprev = NULL;
  x->snext = s->sig_head;
  if (s->sig_head)
    s->sig_head->sprev = x;
  s->sig_head = x;
}

static void sig_unlink(xfer *x) {
  sess *s = x->s;
  if (!x->signalled || s == NULL)
    return;
  if (x->sprev)
    x->sprev->snext = x->snext;
  else
    s->sig_head = x->snext;
  if (x->snext)
    x->snext->sprev = x->sprev;
  x->snext = x->sprev = NULL;
  x->signalled = 0;
}

/* Whether the task parked on x has something to look at. */
static int xfer_wake_cond(const xfer *x) {
  if (x->state != X_RUNNING)
    return 1;
  if (x->stream)
    return x->headers_ready || lunio__buf_avail(&x->body) > 0;
  return x->want_progress && x->progress_dirty;
}

static void wake(xfer *x) {
  lunio_task *t = x->task;
  if (t == NULL)
    return;
  x->task = NULL;
  lunio__wake(lunio__loop_state(x->loop), t, 0, 0);
}

/* ---- active transfers and easy handles --------------------------------- */

static void active_link(sess *s, xfer *x) {
  x->s = s;
  x->prev = NULL;
  x->next = s->active;
  if (s->active)
    s->active->prev = x;
  s->active = x;
  if (s->nactive++ == 0)
    lunio__curlm_ref(&s->m, 1);
}

static void active_unlink(xfer *x) {
  sess *s = x->s;
  if (x->prev)
    x->prev->next = x->next;
  else
    s->active = x->next;
  if (x->next)
    x->next->prev = x->prev;
  x->next = x->prev = NULL;
  if (--s->nactive == 0 && !s->shut)
    lunio__curlm_ref(&s->m, 0);
}

/* Forgets a slot's configuration (curl_easy_reset keeps connections, the
 * session cache and the DNS cache). */
static void slot_reset(easy_slot *slot) {
  /* 7.88.1's reset keeps (and leaks) the cookie file list; clearing it
   * leaves the shared jar and the handle's cookie engine alone. */
  curl_easy_setopt(slot->e, CURLOPT_COOKIEFILE, NULL);
  curl_easy_reset(slot->e);
  curl_slist_free_all(slot->hdrs);
  slot->hdrs = NULL;
  slot->tmpl = 0;
}

/* An easy handle for x: one configured for x's template and scheme when
 * the free list has it (*configured set, x takes back its header list),
 * else a reset one (*fresh when new). */
static CURL *easy_get(sess *s, xfer *x, int *fresh, int *configured) {
  int i, match = -1;
  easy_slot slot;
  *fresh = *configured = 0;
  if (s->nfree == 0) {
    *fresh = 1;
    return curl_easy_init();
  }
  if (x->tmpl != 0)
    for (i = s->nfree - 1; i >= 0 && match < 0; i--)
      if (s->free_easy[i].tmpl == x->tmpl && s->free_easy[i].https == x->https)
        match = i;
  i = match >= 0 ? match : s->nfree - 1;
  slot = s->free_easy[i];
  s->free_easy[i] = s->free_easy[--s->nfree];
  if (match >= 0) {
    *configured = 1;
    x->hdrs = slot.hdrs;
    x->follow = slot.follow;
    x->max_body = slot.max_body;
  } else if (slot.tmpl != 0)
    slot_reset(&slot);
  return slot.e;
}

/* Gives x's easy handle back for another transfer when the session may
 * (s->reuse_easy) and x completed cleanly: configured for x's template
 * when x had one (the slot takes its header list), reset otherwise. Any
 * other handle is cleaned up. Before 8.1.0 libcurl left its header
 * store's "previous header" pointing into the last response on a reused
 * handle (curl PR #11103): a next response whose header block began with
 * a continuation line read freed memory. Found by issue 14's header
 * fuzzer, which also saw a handle's state survive a response cut short
 * inside its headers. */
static void easy_put(sess *s, xfer *x) {
  easy_slot slot;
  int clean = x->state == X_DONE && x->result == CURLE_OK && !x->paused;
  slot.e = x->easy;
  slot.tmpl = 0;
  slot.hdrs = x->hdrs;
  x->hdrs = NULL;
  if (!clean || s == NULL || !s->reuse_easy || s->shut ||
      s->nfree >= MAX_FREE_EASY) {
    curl_slist_free_all(slot.hdrs);
    curl_easy_cleanup(slot.e);
    return;
  }
  if (x->tmpl != 0) {
    slot.tmpl = x->tmpl;
    slot.https = x->https;
    slot.follow = x->follow;
    slot.max_body = x->max_body;
  } else
    slot_reset(&slot);
  s->free_easy[s->nfree++] = slot;
}

/* Takes x out of its session: out of the multi, off both lists, easy
 * handle given back (see easy_put). x->state is left to the caller. */
static void xfer_detach(xfer *x) {
  sess *s = x->s;
  if (s == NULL)
    return;
  sig_unlink(x);
  active_unlink(x);
  if (x->in_multi) {
    curl_multi_remove_handle(s->m.multi, x->easy);
    x->in_multi = 0;
    lunio__io_end(x->loop);
  }
  if (x->easy) {
    easy_put(s, x);
    x->easy = NULL;
  }
  curl_slist_free_all(x->hdrs);
  x->hdrs = NULL;
  x->s = NULL;
}

static void xfer_close_output(xfer *x) {
  if (x->out) {
    if (fclose(x->out) != 0 && x->write_errno == 0)
      x->write_errno = errno;
    x->out = NULL;
  }
}

/* Ends a running transfer at once (cancel, close, collection). */
static void xfer_abort(xfer *x, const char *kind, const char *msg) {
  if (x->state != X_RUNNING)
    return;
  x->task = NULL;
  xfer_detach(x);
  xfer_close_output(x);
  x->state = X_ABORTED;
  x->abort_kind = kind;
  x->abort_msg = msg;
}

static void collect_info(xfer *x) {
  CURL *e = x->easy;
  char *url = NULL;
  long v = 0;
  curl_off_t cl = -1;
  if (e == NULL)
    return;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &x->status);
  curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &v);
  x->version = v;
  if (curl_easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &url) == CURLE_OK && url) {
    char *copy = xstrdup(url);
    if (copy) {
      free(x->eff_url);
      x->eff_url = copy;
    }
  }
  curl_easy_getinfo(e, CURLINFO_NAMELOOKUP_TIME_T, &x->times[0]);
  curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &x->times[1]);
  curl_easy_getinfo(e, CURLINFO_APPCONNECT_TIME_T, &x->times[2]);
  curl_easy_getinfo(e, CURLINFO_STARTTRANSFER_TIME_T, &x->times[3]);
  curl_easy_getinfo(e, CURLINFO_TOTAL_TIME_T, &x->times[4]);
  curl_easy_getinfo(e, CURLINFO_SIZE_DOWNLOAD_T, &x->dlnow);
  curl_easy_getinfo(e, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
  x->dltotal = cl;
}

/* A DONE message arrived for x: record the result, give the easy handle
 * back, wake the task. Loop context only. */
static void xfer_complete(xfer *x, CURLcode rc) {
  collect_info(x);
  if (rc == CURLE_OK && !x->headers_ready) {
    /* libcurl 7.88 reports success when the server closes the connection
     * after a status line, inside the header block: that is no response. */
    rc = CURLE_WEIRD_SERVER_REPLY;
    snprintf(x->errbuf, sizeof x->errbuf,
             "the server closed the connection inside the response headers");
  }
  x->result = rc;
  x->state = X_DONE; /* before detach: a completed handle may stay set up */
  xfer_detach(x);
  xfer_close_output(x);
  if (x->want_progress && rc == CURLE_OK) {
    if (x->dltotal < 0)
      x->dltotal = x->dlnow;
    x->progress_dirty = 1;
  }
  wake(x);
}

/* ---- curl callbacks (C state only) ------------------------------------- */

/* Opens the transfer's sockets as libcurl would, but keeps the errno of a
 * failure: libcurl reports only "Couldn't connect to server" when socket()
 * fails, which hides descriptor exhaustion (EMFILE). */
static curl_socket_t on_opensocket(void *ud, curlsocktype purpose,
                                   struct curl_sockaddr *a) {
  xfer *x = ud;
  curl_socket_t fd = socket(a->family, a->socktype, a->protocol);
  (void)purpose;
  if (fd == CURL_SOCKET_BAD)
    x->socket_errno = errno;
  return fd;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  xfer *x = ud;
  size_t len = size * n;
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    x->head.off = x->head.len = 0;
    x->location_seen = 0;
    x->headers_ready = 0;
  } else if (len >= 9 && strncasecmp(p, "location:", 9) == 0)
    x->location_seen = 1;
  if (lunio__buf_add(&x->head, p, len, NULL) != 0)
    return 0;
  if ((len == 2 && p[0] == '\r') || (len == 1 && p[0] == '\n')) {
    /* End of a header block: final unless informational or a redirect
     * that curl is about to follow. */
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 200 &&
        !(x->follow && code >= 300 && code < 400 && x->location_seen)) {
      if (!x->headers_ready && x->stream) {
        x->headers_ready = 1;
        sig_push(x);
      }
      x->headers_ready = 1;
    }
  }
  return len;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud) {
  xfer *x = ud;
  size_t len = size * n;
  if (x->max_body >= 0 && x->received + (curl_off_t)len > x->max_body) {
    x->too_large = 1;
    return 0;
  }
  if (x->out) {
    if (len && fwrite(p, 1, len, x->out) != len) {
      x->write_errno = errno ? errno : EIO;
      return 0;
    }
    x->received += (curl_off_t)len;
    return len;
  }
  if (x->stream) {
    if (!x->headers_ready)
      x->headers_ready = 1;
    if (lunio__buf_avail(&x->body) >= STREAM_HWM) {
      x->paused = 1;
      sig_push(x);
      return CURL_WRITEFUNC_PAUSE;
    }
  } else if (x->body.cap == 0) {
    /* Size the buffer once from Content-Length when it is known (up to
     * BODY_RESERVE_MAX: a server's claim is not a reason to allocate
     * gigabytes before a byte arrived), starting from a recycled one. */
    http_loop *hl = loop_http(x->loop);
    curl_off_t cl = -1;
    if (hl != NULL && hl->nspare > 0)
      x->body = hl->spare[--hl->nspare];
    curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
    if (cl > 0 && (x->max_body < 0 || cl <= x->max_body))
      lunio__buf_reserve(
          &x->body,
          cl < BODY_RESERVE_MAX ? (size_t)cl : (size_t)BODY_RESERVE_MAX, NULL);
  }
  if (lunio__buf_add(&x->body, p, len, NULL) != 0) {
    x->write_errno = ENOMEM;
    return 0;
  }
  x->received += (curl_off_t)len;
  if (x->stream)
    sig_push(x);
  return len;
}

static int on_xferinfo(void *ud, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow) {
  xfer *x = ud;
  (void)ultotal;
  (void)ulnow;
  if (dlnow != x->dlnow || (dltotal > 0 && dltotal != x->dltotal)) {
    x->dlnow = dlnow;
    x->dltotal = dltotal > 0 ? dltotal : -1;
    x->progress_dirty = 1;
    sig_push(x);
  }
  return 0;
}

/* ---- the engine's callbacks (http_multi.c) ----------------------------- */

static void sess_shutdown(sess *s);

#define SESS(m) container_of(m, sess, m)

/* A transfer finished: record it and wake its task. */
static void sess_done(lunio_curlm *m, CURL *e, CURLcode rc) {
  char *priv = NULL;
  curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
  if (priv)
    xfer_complete((xfer *)priv, rc);
  else {
    curl_multi_remove_handle(m->multi, e);
    curl_easy_cleanup(e);
  }
}

/* After each round: wake the tasks of transfers that signalled something. */
static void sess_after(lunio_curlm *m) {
  sess *s = SESS(m);
  xfer *x;
  while (!s->shut && (x = s->sig_head) != NULL) {
    sig_unlink(x);
    if (x->task && xfer_wake_cond(x))
      wake(x);
  }
}

/* The last uv handle closed. */
static void sess_freed(lunio_curlm *m) {
  sess *s = SESS(m);
  free(s->free_easy);
  free(s);
}

/* A close asked for inside one of the engine's callbacks is due now. */
static void sess_close_due(lunio_curlm *m) { sess_shutdown(SESS(m)); }

static const lunio_curlm_ops sess_engine = {sess_done, sess_after, sess_freed,
                                            sess_close_due};

/* ---- sessions ---------------------------------------------------------- */

static void sess_teardown(sess *s, int wake_tasks);

/* The loop closes: abort the transfers (their tasks were settled already)
 * and free the curl state. */
static void sess_resource_close(lunio_resource *r) {
  sess *s = container_of(r, sess, res);
  s->m.depth = 0;
  sess_teardown(s, 0);
}

static const lunio_resource_ops sess_resource = {"HttpSession",
                                                 sess_resource_close};

static sess *sess_new(lunio_loop *loop, sess_ud *u) {
  http_loop *hl = hl_get(loop);
  sess *s;
  if (hl == NULL || (s = calloc(1, sizeof *s)) == NULL)
    return NULL;
  s->free_easy = malloc(MAX_FREE_EASY * sizeof *s->free_easy);
  s->reuse_easy = curl_version_info(CURLVERSION_NOW)->version_num >= 0x080100;
  s->share = curl_share_init();
  if (!s->free_easy || !s->share ||
      lunio__curlm_init(&s->m, loop, &sess_engine) != 0) {
    if (s->share)
      curl_share_cleanup(s->share);
    free(s->free_easy);
    free(s);
    return NULL;
  }
  s->hl = hl;
  s->ud = u;
  {
    const char *v = getenv("LUNIO_CURL_VERBOSE");
    s->verbose = v != NULL && *v != '\0' && *v != '0';
  }
  curl_multi_setopt(s->m.multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, u->max_conn);
  curl_multi_setopt(s->m.multi, CURLMOPT_MAX_HOST_CONNECTIONS, u->max_host);
  /* libcurl sizes the idle-connection cache at 4 x the handles currently
   * added. Transfers leave the multi handle as they complete and the
   * waiting tasks add new ones a tick later, so after a burst the count is
   * small and keep-alive connections get closed ("cache is full"). Size
   * the cache for the session instead. */
  curl_multi_setopt(s->m.multi, CURLMOPT_MAXCONNECTS,
                    u->max_conn > 0   ? (long)u->max_conn
                    : u->max_host > 0 ? (long)u->max_host * 4
                                      : 256L);
  curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_COOKIE);
  curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  lunio__resource_add(loop, &s->res, &sess_resource);
  return s;
}

/* Aborts every transfer, cleans the curl handles and starts closing the uv
 * handles; the struct is freed by the last close callback. Tasks parked on
 * its transfers are woken to see kind "closed", except at loop close (the
 * core already cancelled them). */
static void sess_teardown(sess *s, int wake_tasks) {
  if (s->shut)
    return;
  s->shut = 1;
  s->m.close_pending = 0;
  if (s->ud) {
    s->ud->s = NULL;
    s->ud->closed = 1;
    s->ud = NULL;
  }
  lunio__resource_remove(&s->res);
  s->hl = NULL;
  while (s->active) {
    xfer *x = s->active;
    lunio_task *t = wake_tasks ? x->task : NULL;
    xfer_abort(x, "closed", "the HTTP session was closed");
    if (t) {
      x->task = t;
      wake(x);
    }
  }
  while (s->nfree > 0) {
    easy_slot *slot = &s->free_easy[--s->nfree];
    curl_easy_cleanup(slot->e);
    curl_slist_free_all(slot->hdrs);
  }
  /* The multi handle first (its cleanup may still close sockets), then the
   * share; s is freed by the engine's last close callback (sess_freed). */
  {
    CURLSH *share = s->share;
    s->share = NULL;
    lunio__curlm_close(&s->m);
    curl_share_cleanup(share);
  }
}

static void sess_shutdown(sess *s) {
  if (s->m.depth > 0) {
    /* Inside one of the engine's callbacks: finish when it returns. */
    s->m.close_pending = 1;
    if (s->ud) {
      s->ud->s = NULL;
      s->ud->closed = 1;
      s->ud = NULL;
    }
    return;
  }
  sess_teardown(s, 1);
}

static sess_ud *check_session(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, SESSION_MT);
}

/* The session's C state on the running loop, binding it on first use. */
static sess *session_bind(lua_State *L, sess_ud *u, lunio_loop *loop) {
  if (u->closed)
    lunio__error_raise(L, "closed", "the HTTP session is closed");
  if (loop->closing || loop->closed)
    lunio__error_raise(L, "closed", "the loop is closing");
  if (u->s == NULL) {
    u->s = sess_new(loop, u);
    if (u->s == NULL)
      luaL_error(L, "cannot create an HTTP session: out of memory");
  } else if (u->s->m.loop != loop)
    lunio__error_raise(L, "invalid_state",
                       "the HTTP session belongs to another loop");
  return u->s;
}

static sess_ud *push_session(lua_State *L, long max_conn, long max_host) {
  sess_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
  memset(u, 0, sizeof *u);
  u->max_conn = max_conn;
  u->max_host = max_host;
  luaL_setmetatable(L, SESSION_MT);
  return u;
}

/* session_new(max_connections, max_per_host [, config]) -> Session; the
 * config value (http.lua's defaults) is kept in the userdata. */
static int http_session_new(lua_State *L) {
  lua_Integer mc = luaL_optinteger(L, 1, 0), mh = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, mc >= 0, 1, "must not be negative");
  luaL_argcheck(L, mh >= 0, 2, "must not be negative");
  lua_settop(L, 3);
  push_session(L, (long)mc, (long)mh);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

/* session_config(session) -> the config given to session_new, or nil */
static int http_session_config(lua_State *L) {
  check_session(L, 1);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

/* default_session([fname]) -> the running loop's shared Session; fname
 * names the caller in the "outside a running task" error. */
static int http_default_session(lua_State *L) {
  lunio_task *t = lunio__check_in_task(L, luaL_optstring(L, 1, "fetch"));
  lua_settop(L, 0);
  lunio__push_loop_table(L, t->loop);
  if (lua_rawgetp(L, 1, &default_session_key) != LUA_TNIL)
    return 1;
  lua_pop(L, 1);
  push_session(L, 100, 0);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, 1, &default_session_key);
  return 1;
}

static int session_close(lua_State *L) {
  sess_ud *u = check_session(L, 1);
  u->closed = 1;
  if (u->s)
    sess_shutdown(u->s);
  return 0;
}

static int session_gc(lua_State *L) {
  sess_ud *u = luaL_checkudata(L, 1, SESSION_MT);
  if (u->s) {
    u->s->ud = NULL;
    sess_shutdown(u->s);
    u->s = NULL;
  }
  return 0;
}

static int session_closed(lua_State *L) {
  lua_pushboolean(L, check_session(L, 1)->closed);
  return 1;
}

/* session:stats() -> {active=, sockets=, idle_handles=, bound=} */
static int session_stats(lua_State *L) {
  sess_ud *u = check_session(L, 1);
  sess *s = u->s;
  int socks = s ? lunio__curlm_sockets(&s->m) : 0;
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, s ? s->nactive : 0);
  lua_setfield(L, -2, "active");
  lua_pushinteger(L, socks);
  lua_setfield(L, -2, "sockets");
  lua_pushinteger(L, s ? s->nfree : 0);
  lua_setfield(L, -2, "idle_handles");
  lua_pushboolean(L, s != NULL);
  lua_setfield(L, -2, "bound");
  return 1;
}

static int session_tostring(lua_State *L) {
  sess_ud *u = check_session(L, 1);
  lua_pushfstring(L, "lunio.HttpSession<%s>: %p",
                  u->closed ? "closed"
                  : u->s    ? "open"
                            : "unbound",
                  (void *)u);
  return 1;
}

/* ---- errors ------------------------------------------------------------ */

static const char *curl_kind(CURLcode rc) {
  switch (rc) {
  case CURLE_OPERATION_TIMEDOUT:
    return "timeout";
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return "resolve";
  case CURLE_COULDNT_CONNECT:
  case CURLE_PROXY:
    return "connect";
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_CLIENTCERT:
  case CURLE_USE_SSL_FAILED:
    return "tls";
  case CURLE_TOO_MANY_REDIRECTS:
    return "too_many_redirects";
  case CURLE_FILESIZE_EXCEEDED:
    return "body_too_large";
  case CURLE_ABORTED_BY_CALLBACK:
    return "aborted";
  default:
    return "protocol";
  }
}

/* Lower-case libuv name of an errno value ("enospc"), as lunio.fs uses. */
static void push_errno_kind(lua_State *L, int err) {
  const char *name = uv_err_name(uv_translate_sys_error(err));
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (; *name; name++)
    luaL_addchar(&b, (char)(*name >= 'A' && *name <= 'Z' ? *name + 32 : *name));
  luaL_pushresult(&b);
}

static int raise_xfer(lua_State *L, xfer *x) {
  const char *url = x->req_url ? x->req_url : "?";
  if (x->state == X_ABORTED) {
    lunio__error_new(L, x->abort_kind, "%s: %s", url, x->abort_msg);
    lua_pushstring(L, url);
    lua_setfield(L, -2, "url");
    return lua_error(L);
  }
  if (x->result == CURLE_WRITE_ERROR && x->too_large) {
    lunio__error_new(L, "body_too_large",
                     "%s: the body is larger than max_body_size (%I bytes)",
                     url, (lua_Integer)x->max_body);
  } else if (x->result == CURLE_WRITE_ERROR && x->write_errno) {
    push_errno_kind(L, x->write_errno);
    lunio__error_new(L, lua_tostring(L, -1), "%s: cannot write %s: %s", url,
                     x->out_path ? x->out_path : "the body",
                     strerror(x->write_errno));
    if (x->out_path) {
      lua_pushstring(L, x->out_path);
      lua_setfield(L, -2, "path");
    }
  } else if (x->result == CURLE_COULDNT_CONNECT && x->socket_errno) {
    push_errno_kind(L, x->socket_errno);
    lunio__error_new(L, "connect", "%s: cannot open a socket: %s (%s)", url,
                     strerror(x->socket_errno), lua_tostring(L, -1));
  } else {
    const char *msg = x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->result);
    lunio__error_new(L, curl_kind(x->result), "%s: %s", url, msg);
  }
  lua_pushstring(L, url);
  lua_setfield(L, -2, "url");
  lua_pushinteger(L, (lua_Integer)x->result);
  lua_setfield(L, -2, "curl_code");
  return lua_error(L);
}

/* ---- transfers ---------------------------------------------------------- */

static xfer *check_xfer(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, XFER_MT);
}

static void xfer_on_cancel(lunio_task *t, void *data) {
  xfer *x = data;
  (void)t;
  x->task = NULL;
  xfer_abort(x, "aborted", "the transfer was cancelled");
}

static int xfer_gc(lua_State *L) {
  xfer *x = luaL_checkudata(L, 1, XFER_MT);
  xfer_abort(x, "aborted", "the transfer was collected");
  xfer_close_output(x);
  lunio__buf_free(&x->body, NULL);
  lunio__buf_free(&x->head, NULL);
  free(x->req_url);
  free(x->eff_url);
  free(x->out_path);
  x->req_url = x->eff_url = x->out_path = NULL;
  return 0;
}

/* transfer:close(): abort if still running, drop buffered data. */
static int xfer_close(lua_State *L) {
  xfer *x = check_xfer(L, 1);
  xfer_abort(x, "aborted", "the response was closed");
  lunio__buf_free(&x->body, NULL);
  return 0;
}

static double usec(curl_off_t v) { return (double)v / 1e6; }

/* The timings as five native doubles in one string (dns, connect, tls,
 * ttfb, total): http.lua unpacks them when they are read. */
static void push_timings_raw(lua_State *L, xfer *x) {
  double t[5];
  int i;
  for (i = 0; i < 5; i++)
    t[i] = usec(x->times[i]);
  lua_pushlstring(L, (const char *)t, sizeof t);
}

static const char *version_name(long v) {
  switch (v) {
  case CURL_HTTP_VERSION_1_0:
    return "1.0";
  case CURL_HTTP_VERSION_1_1:
    return "1.1";
  case CURL_HTTP_VERSION_2_0:
    return "2";
  case CURL_HTTP_VERSION_3:
    return "3";
  default:
    return "";
  }
}

/* The response table handed to http.lua, which makes it the Response.
 * The header block and the timings go as one string each (_head, _times):
 * http.lua parses them only when headers, reason or timings are read, so
 * a request whose caller reads the status and the body builds no header
 * strings at all. */
static void push_info(lua_State *L, xfer *x) {
  int info;
  lua_createtable(L, 0, 16); /* room for the fields http.lua adds */
  info = lua_gettop(L);
  lua_pushinteger(L, x->status);
  lua_setfield(L, info, "status");
  lua_pushstring(L, version_name(x->version));
  lua_setfield(L, info, "http_version");
  lua_pushstring(L, x->eff_url ? x->eff_url : x->req_url);
  lua_setfield(L, info, "url");
  lua_pushlstring(L, x->head.p ? x->head.p + x->head.off : "",
                  lunio__buf_avail(&x->head));
  lua_setfield(L, info, "_head");
  push_timings_raw(L, x);
  lua_setfield(L, info, "_times");
  if (x->dltotal >= 0) {
    lua_pushinteger(L, (lua_Integer)x->dltotal);
    lua_setfield(L, info, "_total");
  }
  if (!x->stream && !x->out_path) {
    lua_pushlstring(L, x->body.p ? x->body.p + x->body.off : "",
                    lunio__buf_avail(&x->body));
    lua_setfield(L, info, "body");
    body_recycle(x);
  }
  if (!x->stream)
    lunio__buf_free(&x->head, NULL);
}

/* Stack of perform and its continuation:
 * 1 session, 2 spec, 3 on_progress (or nil), 4 transfer. */
enum { CTX_PARK = 1, CTX_PROGRESS };

static int perform_k(lua_State *L, int status, lua_KContext ctx);

static int perform_finish(lua_State *L, xfer *x) {
  if (x->state == X_ABORTED || (x->state == X_DONE && x->result != CURLE_OK))
    return raise_xfer(L, x);
  if (x->state == X_RUNNING)
    collect_info(x); /* streamed: the headers are in */
  push_info(L, x);
  if (x->stream) {
    lua_pushvalue(L, 4);
    return 2;
  }
  return 1;
}

static int perform_wait(lua_State *L, xfer *x) {
  for (;;) {
    lunio_task *t;
    if (x->want_progress && x->progress_dirty &&
        (x->state == X_RUNNING ||
         (x->state == X_DONE && x->result == CURLE_OK))) {
      int rc;
      x->progress_dirty = 0;
      lua_pushvalue(L, 3);
      lua_pushinteger(L, (lua_Integer)x->dlnow);
      if (x->dltotal >= 0)
        lua_pushinteger(L, (lua_Integer)x->dltotal);
      else
        lua_pushnil(L);
      rc = lua_pcallk(L, 2, 0, 0, CTX_PROGRESS, perform_k);
      if (rc != LUA_OK) {
        xfer_abort(x, "aborted", "on_progress failed");
        return lua_error(L);
      }
      continue;
    }
    if (x->state != X_RUNNING || (x->stream && x->headers_ready))
      return perform_finish(L, x);
    t = lunio__check_in_task(L, "fetch");
    x->task = t;
    return lunio__park_c(L, t, xfer_on_cancel, x, CTX_PARK, perform_k);
  }
}

static int perform_k(lua_State *L, int status, lua_KContext ctx) {
  xfer *x = check_xfer(L, 4);
  if (ctx == CTX_PARK) {
    lunio_task *t = lunio__check_in_task(L, "fetch");
    lunio__resumed(L, t);
  } else if (status != LUA_OK && status != LUA_YIELD) {
    xfer_abort(x, "aborted", "on_progress failed");
    return lua_error(L);
  }
  lua_settop(L, 4);
  return perform_wait(L, x);
}

static const char *opt_string(lua_State *L, int spec, const char *k) {
  const char *s;
  lua_getfield(L, spec, k);
  s = lua_tostring(L, -1); /* kept alive by the spec table */
  lua_pop(L, 1);
  return s;
}

static double opt_number(lua_State *L, int spec, const char *k, double d) {
  double v;
  lua_getfield(L, spec, k);
  v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : d;
  lua_pop(L, 1);
  return v;
}

static int opt_bool(lua_State *L, int spec, const char *k, int d) {
  int t, v;
  t = lua_getfield(L, spec, k);
  v = t == LUA_TNIL ? d : lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static long ms_of(double seconds) {
  double ms = seconds * 1000.0;
  if (ms < 1)
    return 1;
  if (ms > 2147483647.0)
    return 2147483647L;
  return (long)ms;
}

/* What differs between two requests of one template: the URL and the
 * transfer the callbacks see. */
static void setup_transfer(xfer *x) {
  CURL *e = x->easy;
  curl_easy_setopt(e, CURLOPT_URL, x->req_url);
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, x);
}

/* Applies the spec table to a fresh easy handle. On bad input it pushes
 * the error value and returns 1, so the caller can undo before raising. */
static int setup_easy(lua_State *L, sess *s, xfer *x, int spec, int fresh) {
  CURL *e = x->easy;
  const char *url, *method, *body, *str;
  size_t body_len = 0;
  double num;
  int i, n;
  long redirects;

  url = x->req_url;
  method = opt_string(L, spec, "method");
  if (method == NULL)
    method = "GET";

  setup_transfer(x);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, lunio__curlm_closesocket);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, &s->m);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_opensocket);
  /* The share holds the cookie jar. Loading the (empty) cookie file turns
   * the handle's cookie engine on, and curl_easy_reset keeps it on; setting
   * COOKIEFILE again on a recycled handle would leak its list in 7.88.1. */
  curl_easy_setopt(e, CURLOPT_SHARE, s->share);
  if (fresh)
    curl_easy_setopt(e, CURLOPT_COOKIEFILE, "");
  curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
  /* Wait for a connection being set up that may multiplex (h2 by ALPN)
   * rather than open another; plain HTTP/1.1 cannot multiplex. */
  if (x->https)
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
  if (s->verbose)
    curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);

  /* method and body */
  lua_getfield(L, spec, "body");
  body = lua_tolstring(L, -1, &body_len);
  if (body) /* POSTFIELDS is not copied: the transfer keeps the string */
    lua_setiuservalue(L, 4, 1);
  else
    lua_pop(L, 1);
  if (strcmp(method, "GET") == 0 && body == NULL)
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  else if (strcmp(method, "HEAD") == 0 && body == NULL)
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  else {
    if (strcmp(method, "POST") != 0)
      curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
        strcmp(method, "PATCH") == 0) {
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
    }
  }

  /* headers: a list of complete "Name: value" lines */
  lua_getfield(L, spec, "headers");
  if (lua_istable(L, -1)) {
    n = (int)luaL_len(L, -1);
    for (i = 1; i <= n; i++) {
      struct curl_slist *l;
      lua_rawgeti(L, -1, i);
      str = lua_tostring(L, -1);
      if (str == NULL || strpbrk(str, "\r\n") != NULL) {
        lua_pushfstring(L, "invalid header line #%d", i);
        return 1;
      }
      l = curl_slist_append(x->hdrs, str);
      lua_pop(L, 1);
      if (l == NULL) {
        lua_pushliteral(L, "out of memory");
        return 1;
      }
      x->hdrs = l;
    }
  }
  lua_pop(L, 1);
  if (x->hdrs)
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);

  /* timeouts and redirects */
  num = opt_number(L, spec, "timeout", -1);
  if (num > 0)
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, ms_of(num));
  num = opt_number(L, spec, "connect_timeout", -1);
  if (num > 0)
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ms_of(num));
  /* Idle timeout: less than a byte a second (libcurl averages over a few
   * seconds) for that long ends the transfer with CURLE_OPERATION_TIMEDOUT;
   * a slow download that keeps moving is not cut. */
  num = opt_number(L, spec, "idle_timeout", -1);
  if (num > 0) {
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME,
                     num < 1     ? 1L
                     : num > 1e9 ? 1000000000L
                                 : (long)ceil(num));
  }
  redirects = (long)opt_number(L, spec, "redirects", 10);
  x->follow = redirects > 0;
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, redirects > 0 ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, redirects > 0 ? redirects : 0L);

  /* TLS, proxy, protocol version, encoding */
  if (!opt_bool(L, spec, "verify", 1)) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if ((str = opt_string(L, spec, "cainfo")) != NULL)
    curl_easy_setopt(e, CURLOPT_CAINFO, str);
  if ((str = opt_string(L, spec, "proxy")) != NULL)
    curl_easy_setopt(e, CURLOPT_PROXY, str);
  if ((str = opt_string(L, spec, "http_version")) != NULL) {
    long v = CURL_HTTP_VERSION_NONE;
    if (strcmp(str, "1.0") == 0 || strcmp(str, "1.1") == 0) {
      v = str[2] == '0' ? CURL_HTTP_VERSION_1_0 : CURL_HTTP_VERSION_1_1;
      curl_easy_setopt(e, CURLOPT_PIPEWAIT, 0L);
    } else if (strcmp(str, "2") == 0) {
      v = CURL_HTTP_VERSION_2_0;
      curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    } else if (strcmp(str, "2-prior-knowledge") == 0) {
      v = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE;
      /* libcurl < 8.0.0 (curl#10634, fixed by curl PR #10643): a transfer
       * that joins an existing h2c prior-knowledge connection, idle or
       * busy, stacks a second HTTP/2 filter on it and fails with
       * CURLE_HTTP2. Give each such transfer a connection of its own. */
      if (curl_version_info(CURLVERSION_NOW)->version_num < 0x080000 &&
          strncasecmp(url, "http:", 5) == 0) {
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
        curl_easy_setopt(e, CURLOPT_PIPEWAIT, 0L);
      }
    } else {
      lua_pushfstring(L, "invalid http_version '%s'", str);
      return 1;
    }
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, v);
  }
  if (opt_bool(L, spec, "decompress", 1))
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  if ((str = opt_string(L, spec, "user")) != NULL) {
    const char *pw = opt_string(L, spec, "password");
    curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(e, CURLOPT_USERNAME, str);
    curl_easy_setopt(e, CURLOPT_PASSWORD, pw ? pw : "");
  }

  /* body handling */
  num = opt_number(L, spec, "max_body_size", -1);
  x->max_body = num >= 0 ? (curl_off_t)num : -1;
  if (x->max_body >= 0)
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, x->max_body);
  x->stream = opt_bool(L, spec, "stream", 0);
  if (!lua_isnil(L, 3) && !x->stream) {
    x->want_progress = 1;
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, x);
  }
  if ((str = opt_string(L, spec, "output")) != NULL) {
    x->out_path = xstrdup(str);
    x->out = fopen(str, "wb");
    if (x->out == NULL) {
      int err = errno;
      push_errno_kind(L, err);
      lunio__error_new(L, lua_tostring(L, -1), "cannot open %s: %s", str,
                       strerror(err));
      lua_pushstring(L, str);
      lua_setfield(L, -2, "path");
      return 1;
    }
  }
  return 0;
}

/* perform(session, spec) -> info [, transfer]
 * spec: url, method, headers (list of lines), body, timeout,
 * connect_timeout, redirects, verify, cainfo, proxy, http_version,
 * decompress, stream, output, max_body_size, user, password, on_progress */
static int http_perform(lua_State *L) {
  sess_ud *u = check_session(L, 1);
  lua_Integer tmpl = luaL_optinteger(L, 3, 0);
  const char *url;
  lunio_loop *loop;
  sess *s;
  xfer *x;
  CURLMcode mrc;
  int fresh, configured;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  loop = lunio__check_in_task(L, "fetch")->loop;
  s = session_bind(L, u, loop);
  lua_getfield(L, 2, "on_progress");      /* 3 */
  x = lua_newuserdatauv(L, sizeof *x, 1); /* 4 */
  memset(x, 0, sizeof *x);
  x->loop = loop;
  x->max_body = -1;
  x->dltotal = -1;
  luaL_setmetatable(L, XFER_MT);
  url = opt_string(L, 2, "url");
  if (url == NULL)
    return luaL_error(L, "spec.url missing");
  x->req_url = xstrdup(url);
  if (x->req_url == NULL)
    return luaL_error(L, "not enough memory");
  x->tmpl = tmpl;
  x->https = strncasecmp(url, "https:", 6) == 0;
  x->easy = easy_get(s, x, &fresh, &configured);
  if (x->easy == NULL)
    return luaL_error(L, "cannot create a curl handle");
  x->state = X_RUNNING;
  active_link(s, x); /* from here on __gc/abort clean up */
  if (configured)
    setup_transfer(x); /* the rest is the template's, set already */
  else if (setup_easy(L, s, x, 2, fresh) != 0) {
    xfer_abort(x, "aborted", "bad request");
    return lua_error(L);
  }
  mrc = curl_multi_add_handle(s->m.multi, x->easy);
  if (mrc != CURLM_OK) {
    xfer_abort(x, "aborted", "cannot start the transfer");
    return luaL_error(L, "curl_multi_add_handle: %s", curl_multi_strerror(mrc));
  }
  x->in_multi = 1;
  lunio__io_begin(loop);
  return perform_wait(L, x);
}

/* Resumes a paused stream once the reader drained below half the mark. */
static void maybe_unpause(xfer *x) {
  if (x->paused && x->state == X_RUNNING && x->easy &&
      lunio__buf_avail(&x->body) < STREAM_HWM / 2) {
    x->paused = 0;
    curl_easy_pause(x->easy, CURLPAUSE_CONT); /* may call on_write now */
  }
}

static int read_k(lua_State *L, int status, lua_KContext ctx);

static int read_wait(lua_State *L, xfer *x) {
  lua_Integer n = lua_tointeger(L, 2);
  size_t avail = lunio__buf_avail(&x->body);
  lunio_task *t;
  if (avail > 0) {
    size_t take = n > 0 && (size_t)n < avail ? (size_t)n : avail;
    lua_pushlstring(L, x->body.p + x->body.off, take);
    lunio__buf_consume(&x->body, take, NULL);
    maybe_unpause(x);
    return 1;
  }
  if (x->state == X_DONE && x->result == CURLE_OK) {
    lua_pushnil(L);
    return 1;
  }
  if (x->state != X_RUNNING)
    return raise_xfer(L, x);
  if (x->task != NULL)
    return lunio__error_raise(L, "invalid_state",
                              "another task is reading this response");
  t = lunio__check_in_task(L, "read");
  x->task = t;
  return lunio__park_c(L, t, xfer_on_cancel, x, 0, read_k);
}

static int read_k(lua_State *L, int status, lua_KContext ctx) {
  xfer *x = check_xfer(L, 1);
  lunio_task *t = lunio__check_in_task(L, "read");
  (void)status;
  (void)ctx;
  lunio__resumed(L, t);
  lua_settop(L, 2);
  return read_wait(L, x);
}

/* read(transfer [, n]) -> next piece of a streamed body (at most n bytes),
 * or nil at the end; raises the transfer's error. */
static int http_read(lua_State *L) {
  xfer *x = check_xfer(L, 1);
  lua_Integer n = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, n >= 0, 2, "size must not be negative");
  lua_settop(L, 1);
  lua_pushinteger(L, n);
  return read_wait(L, x);
}

/* transfer_info(transfer) -> timings (packed as in Response._times), bytes
 * received on the wire, done, bytes buffered for the reader, paused */
static int http_transfer_info(lua_State *L) {
  xfer *x = check_xfer(L, 1);
  if (x->state == X_RUNNING)
    collect_info(x);
  push_timings_raw(L, x);
  lua_pushinteger(L, (lua_Integer)x->dlnow);
  lua_pushboolean(L, x->state == X_DONE);
  lua_pushinteger(L, (lua_Integer)lunio__buf_avail(&x->body));
  lua_pushboolean(L, x->paused);
  return 5;
}

static int xfer_tostring(lua_State *L) {
  xfer *x = check_xfer(L, 1);
  static const char *const names[] = {"new", "running", "done", "aborted"};
  lua_pushfstring(L, "lunio.HttpTransfer<%s %s>", names[x->state],
                  x->req_url ? x->req_url : "?");
  return 1;
}

/* error(kind, message) -> a lunio error table (not raised) */
static int http_error(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  const char *msg = luaL_checkstring(L, 2);
  lunio__error_new(L, kind, "%s", msg);
  return 1;
}

static int http_curl_version(lua_State *L) {
  lua_pushstring(L, curl_version());
  return 1;
}

static const luaL_Reg session_meta[] = {{"__gc", session_gc},
                                        {"__close", session_close},
                                        {"__tostring", session_tostring},
                                        {NULL, NULL}};

static const luaL_Reg session_methods[] = {{"close", session_close},
                                           {"closed", session_closed},
                                           {"stats", session_stats},
                                           {NULL, NULL}};

static const luaL_Reg xfer_meta[] = {{"__gc", xfer_gc},
                                     {"__close", xfer_close},
                                     {"__tostring", xfer_tostring},
                                     {NULL, NULL}};

/* new_template_id() -> a number never returned before in this Lua state
 * (the easy slots tell templates apart by it, so it must survive a reload
 * of http.lua; the count lives in the registry). */
static const char template_key = 'T';

static int http_new_template_id(lua_State *L) {
  lua_Integer id;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &template_key);
  id = lua_tointeger(L, -1) + 1;
  lua_pushinteger(L, id);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &template_key);
  lua_pushinteger(L, id);
  return 1;
}

static const luaL_Reg http_funcs[] = {{"session_new", http_session_new},
                                      {"new_template_id", http_new_template_id},
                                      {"session_config", http_session_config},
                                      {"default_session", http_default_session},
                                      {"perform", http_perform},
                                      {"read", http_read},
                                      {"transfer_close", xfer_close},
                                      {"transfer_info", http_transfer_info},
                                      {"error", http_error},
                                      {"curl_version", http_curl_version},
                                      {NULL, NULL}};

void lunio__open_http(lua_State *L) {
  /* Reference-counted and thread-safe in this libcurl ("threadsafe"). */
  curl_global_init(CURL_GLOBAL_DEFAULT);
  if (luaL_newmetatable(L, SESSION_MT)) {
    luaL_setfuncs(L, session_meta, 0);
    luaL_newlib(L, session_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, XFER_MT))
    luaL_setfuncs(L, xfer_meta, 0);
  lua_pop(L, 1);
  luaL_newlib(L, http_funcs);
  luaL_getmetatable(L, SESSION_MT);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "session_methods");
  lua_pop(L, 1);
}
