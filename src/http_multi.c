/*
 * http_multi.c - a libcurl multi handle driven by the loop's libuv loop
 * (curl's multi_socket API): the engine under http.c's sessions.
 *
 * A lunio_curlm watches curl's sockets with one uv_poll_t each (kept in an
 * fd-indexed table), runs curl's timeout on a uv_timer_t (a 0 ms timeout on
 * a uv_idle_t, since a 0 ms uv timer restarted from a timer callback spins
 * in libuv < 1.48), calls curl_multi_socket_action from those libuv
 * callbacks only, and then hands each finished transfer (ops->done) and the
 * end of the round (ops->after) to its owner. Rules of docs/notes on
 * libcurl + libuv: no Lua here; a socket curl removes (CURL_POLL_REMOVE or
 * CLOSESOCKETFUNCTION) stops being watched at once, so its number may be
 * reused, and its poll context is freed in the close callback.
 *
 * Lifetime: the struct is its owner's (embedded in http.c's session).
 * lunio__curlm_close cleans the multi handle and closes every uv handle;
 * the last close callback calls ops->freed, which frees the owner. Closing
 * from inside one of the engine's own callbacks is deferred to the end of
 * that callback (depth, close_pending).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_multi.h"

struct lunio_curlm_poll {
  uv_poll_t h;
  lunio_curlm *m;
  curl_socket_t fd;
  int events;
};

typedef struct lunio_curlm_poll pollctx;

static pollctx *fd_get(lunio_curlm *m, curl_socket_t fd) {
  return fd >= 0 && fd < m->nfds ? m->fds[fd] : NULL;
}

static int fd_put(lunio_curlm *m, curl_socket_t fd, pollctx *c) {
  if (fd >= m->nfds) {
    int n = m->nfds ? m->nfds : 64;
    pollctx **t;
    while (n <= fd)
      n *= 2;
    t = realloc(m->fds, (size_t)n * sizeof *t);
    if (t == NULL)
      return -1;
    memset(t + m->nfds, 0, (size_t)(n - m->nfds) * sizeof *t);
    m->fds = t;
    m->nfds = n;
  }
  m->fds[fd] = c;
  return 0;
}

static void maybe_free(lunio_curlm *m) {
  if (m->shut && m->open_handles == 0) {
    free(m->fds);
    m->fds = NULL;
    m->ops->freed(m);
  }
}

static void on_handle_closed(uv_handle_t *h) {
  lunio_curlm *m = h->data;
  m->open_handles--;
  maybe_free(m);
}

static void on_poll_closed(uv_handle_t *h) {
  pollctx *c = h->data;
  lunio_curlm *m = c->m;
  free(c);
  m->open_handles--;
  maybe_free(m);
}

/* Stops watching fd now (so the number may be reused at once) and frees
 * the context once libuv is done with it. */
static void poll_release(lunio_curlm *m, pollctx *c) {
  m->fds[c->fd] = NULL;
  uv_poll_stop(&c->h);
  uv_close((uv_handle_t *)&c->h, on_poll_closed);
}

static void on_poll(uv_poll_t *h, int status, int events);

static int on_socket(CURL *e, curl_socket_t fd, int what, void *userp,
                     void *socketp) {
  lunio_curlm *m = userp;
  pollctx *c = fd_get(m, fd);
  int ev = 0, rc;
  (void)e;
  (void)socketp;
  if (what == CURL_POLL_REMOVE) {
    if (c)
      poll_release(m, c);
    return 0;
  }
  if (c == NULL) {
    c = calloc(1, sizeof *c);
    if (c == NULL)
      return 0; /* never -1: that would abort every transfer */
    rc = uv_poll_init_socket(lunio__uv(m->loop), &c->h, fd);
    if (rc != 0 || fd_put(m, fd, c) != 0) {
      if (rc == 0) {
        c->m = m;
        c->h.data = c;
        m->open_handles++;
        uv_close((uv_handle_t *)&c->h, on_poll_closed);
      } else
        free(c);
      fprintf(stderr, "lunio.http: cannot watch socket %d: %s\n", (int)fd,
              rc ? uv_strerror(rc) : "out of memory");
      return 0;
    }
    c->m = m;
    c->fd = fd;
    c->h.data = c;
    m->open_handles++;
  }
  if (what & CURL_POLL_IN)
    ev |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    ev |= UV_WRITABLE;
  c->events = ev;
  rc = uv_poll_start(&c->h, ev, on_poll);
  if (rc != 0)
    fprintf(stderr, "lunio.http: cannot poll socket %d: %s\n", (int)fd,
            uv_strerror(rc));
  return 0;
}

int lunio__curlm_closesocket(void *userp, curl_socket_t fd) {
  lunio_curlm *m = userp;
  pollctx *c = fd_get(m, fd);
  if (c)
    poll_release(m, c);
  return close(fd);
}

static void on_timer(uv_timer_t *h);
static void on_kick(uv_idle_t *h);

static int on_curl_timer(CURLM *multi, long ms, void *userp) {
  lunio_curlm *m = userp;
  (void)multi;
  if (ms < 0) {
    uv_timer_stop(&m->timer);
    uv_idle_stop(&m->kick);
  } else if (ms == 0) {
    /* Run on the next loop iteration, from an idle handle: a 0 ms uv timer
     * restarted from a timer callback spins in libuv < 1.48. */
    uv_timer_stop(&m->timer);
    uv_idle_start(&m->kick, on_kick);
  } else {
    uv_idle_stop(&m->kick);
    uv_timer_start(&m->timer, on_timer, (uint64_t)ms, 0);
  }
  return 0;
}

/* ---- driving curl from the loop ---------------------------------------- */

static void enter(lunio_curlm *m) { m->depth++; }

static void leave(lunio_curlm *m) {
  if (--m->depth == 0 && m->close_pending)
    m->ops->close_due(m);
}

/* After every socket_action: the finished transfers, then the owner's
 * end of round. */
static void process(lunio_curlm *m) {
  CURLMsg *msg;
  int q;
  while (!m->shut && (msg = curl_multi_info_read(m->multi, &q)) != NULL)
    if (msg->msg == CURLMSG_DONE)
      m->ops->done(m, msg->easy_handle, msg->data.result);
  if (!m->shut)
    m->ops->after(m);
}

static void action(lunio_curlm *m, curl_socket_t fd, int flags) {
  int running = 0;
  if (m->shut)
    return;
  enter(m);
  curl_multi_socket_action(m->multi, fd, flags, &running);
  process(m);
  leave(m);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  pollctx *c = h->data;
  lunio_curlm *m = c->m;
  curl_socket_t fd = c->fd;
  int flags = 0;
  if (status < 0) {
    /* POLLERR/POLLHUP: libuv already stopped the watcher. */
    flags = CURL_CSELECT_ERR;
    if (c->events & UV_READABLE)
      flags |= CURL_CSELECT_IN;
    if (c->events & UV_WRITABLE)
      flags |= CURL_CSELECT_OUT;
  } else {
    if (events & UV_READABLE)
      flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
      flags |= CURL_CSELECT_OUT;
  }
  enter(m);
  action(m, fd, flags);
  if (status < 0 && !m->shut && fd_get(m, fd) == c)
    uv_poll_start(&c->h, c->events, on_poll); /* curl still wants it */
  leave(m);
}

static void on_timer(uv_timer_t *h) { action(h->data, CURL_SOCKET_TIMEOUT, 0); }

static void on_kick(uv_idle_t *h) {
  uv_idle_stop(h);
  action(h->data, CURL_SOCKET_TIMEOUT, 0);
}

/* ---- life cycle ---------------------------------------------------------- */

int lunio__curlm_init(lunio_curlm *m, lunio_loop *loop,
                      const lunio_curlm_ops *ops) {
  uv_loop_t *uv = lunio__uv(loop);
  memset(m, 0, sizeof *m);
  m->multi = curl_multi_init();
  if (m->multi == NULL)
    return UV_ENOMEM;
  m->ops = ops;
  m->loop = loop;
  curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
  curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m);
  uv_timer_init(uv, &m->timer);
  uv_idle_init(uv, &m->kick);
  m->timer.data = m;
  m->kick.data = m;
  m->open_handles = 2;
  lunio__curlm_ref(m, 0);
  return 0;
}

void lunio__curlm_ref(lunio_curlm *m, int on) {
  uv_handle_t *a = (uv_handle_t *)&m->timer, *b = (uv_handle_t *)&m->kick;
  if (on) {
    uv_ref(a);
    uv_ref(b);
  } else {
    uv_unref(a);
    uv_unref(b);
  }
}

void lunio__curlm_close(lunio_curlm *m) {
  int i;
  if (m->shut)
    return;
  m->shut = 1;
  m->close_pending = 0;
  curl_multi_cleanup(m->multi); /* may call on_socket / closesocket */
  m->multi = NULL;
  for (i = 0; i < m->nfds; i++)
    if (m->fds[i])
      poll_release(m, m->fds[i]);
  uv_close((uv_handle_t *)&m->timer, on_handle_closed);
  uv_close((uv_handle_t *)&m->kick, on_handle_closed);
}

int lunio__curlm_sockets(const lunio_curlm *m) {
  int i, n = 0;
  for (i = 0; i < m->nfds; i++)
    n += m->fds[i] != NULL;
  return n;
}
