/*
 * req.c - one libuv request (fs, getaddrinfo, work, connect, write ...)
 * awaited by one task.
 *
 * The request is malloc'd, not a Lua object: libuv owns it until its
 * callback runs, which may be long after the task that started it was
 * cancelled. Whoever finishes last frees it:
 *   - done first: the callback records the status and wakes the task; the
 *     task's continuation reads the result and frees the request;
 *   - cancelled first: the task is detached (r->task = NULL) and libuv is
 *     asked to cancel (uv_cancel works for requests still queued in the
 *     thread pool); the callback then frees the request, whatever its
 *     status.
 * A request counts as I/O in flight from its creation to its callback, so
 * virtual time does not jump past it.
 *
 * The pattern (see dns.c):
 *   t = lunio__check_in_task(L, "name");
 *   r = lunio__req_new(L, t->loop, sizeof *mine);
 *   rc = uv_xxx(lunio__uv(t->loop), &r->u.xxx, ..., on_done);
 *   if (rc < 0) { lunio__req_free(r); return lunio__uv_error_raise(...); }
 *   return lunio__req_await(L, r, t, (lua_KContext)r, xxx_k);
 * with on_done calling lunio__req_done(r, status) and xxx_k calling
 * lunio__req_resumed(L, r) first and lunio__req_free(r) when done.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The loop's requests that were handed to a woken task and not consumed:
 * if the loop is torn down before that task runs again (collected without
 * close()), nobody else would free them. */
typedef struct req_loop {
  lunio_req *delivered;
} req_loop;

static void req_loop_close(lunio_loop *loop, void *ext) {
  req_loop *rl = ext;
  (void)loop;
  while (rl->delivered != NULL)
    lunio__req_free(rl->delivered); /* unlinks it */
}

static const lunio_ext_ops req_ext = {"requests", sizeof(req_loop),
                                      req_loop_close, NULL};

static void undeliver(lunio_req *r) {
  req_loop *rl;
  if (!r->delivered)
    return;
  rl = lunio__loop_ext_peek(r->loop, &req_ext);
  if (r->dprev != NULL)
    r->dprev->dnext = r->dnext;
  else if (rl != NULL)
    rl->delivered = r->dnext;
  if (r->dnext != NULL)
    r->dnext->dprev = r->dprev;
  r->dnext = r->dprev = NULL;
  r->delivered = 0;
}

lunio_req *lunio__req_new(lua_State *L, lunio_loop *loop, size_t size) {
  lunio_req *r;
  if (size < sizeof *r)
    size = sizeof *r;
  r = calloc(1, size);
  if (r == NULL)
    luaL_error(L, "not enough memory");
  r->loop = loop;
  r->u.req.data = r;
  lunio__io_begin(loop);
  return r;
}

void lunio__req_free(lunio_req *r) {
  undeliver(r);
  if (!r->done) /* it never started: it was counted all the same */
    lunio__io_end(r->loop);
  if (r->cleanup != NULL)
    r->cleanup(r);
  free(r);
}

/* The task left while the request was in flight: detach it and let the
 * callback free the request. */
static void req_on_cancel(lunio_task *t, void *data) {
  lunio_req *r = data;
  (void)t;
  r->task = NULL;
  uv_cancel(&r->u.req); /* only queued pool work can be; fine otherwise */
}

int lunio__req_await(lua_State *L, lunio_req *r, lunio_task *t,
                     lua_KContext ctx, lua_KFunction k) {
  r->task = t;
  return lunio__park_c(L, t, req_on_cancel, r, ctx, k);
}

void lunio__req_done(lunio_req *r, int status) {
  lunio_task *t = r->task;
  r->status = status;
  r->done = 1;
  lunio__io_end(r->loop);
  if (t == NULL) {
    lunio__req_free(r);
    return;
  }
  {
    req_loop *rl = lunio__loop_ext(r->loop, &req_ext);
    if (rl != NULL) {
      r->delivered = 1;
      r->dprev = NULL;
      r->dnext = rl->delivered;
      if (rl->delivered != NULL)
        rl->delivered->dprev = r;
      rl->delivered = r;
    }
  }
  lunio__wake(lunio__loop_state(r->loop), t, 0, 0);
}

int lunio__req_resumed(lua_State *L, lunio_req *r) {
  lunio_task *t = lunio__task_of(L);
  /* Cancelled while parked: r was detached and belongs to its callback
   * (which may have freed it already): never touch it. */
  if (t->flags & LUNIO_F_WAKE_ERROR)
    lunio__resumed(L, t);
  /* Cancelled after the wake-up: the result is dropped. */
  if (LUNIO_CANCEL_AT_RESUME(t)) {
    lunio__req_free(r);
    lunio__resumed(L, t);
  }
  return r->status;
}

void lunio__req_again(lunio_req *r) {
  undeliver(r);
  r->done = 0;
  r->status = 0;
  r->task = NULL;
  memset(&r->u, 0, sizeof r->u);
  r->u.req.data = r;
  lunio__io_begin(r->loop);
}
