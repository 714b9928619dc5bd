/*
 * http_multi.h - a curl multi handle driven by libuv (http_multi.c), for
 * http.c only: the rest of the core does not see libcurl.
 */
#ifndef LUNIO_HTTP_MULTI_H
#define LUNIO_HTTP_MULTI_H

#include <curl/curl.h>

#include "internal.h"

typedef struct lunio_curlm lunio_curlm;

/* The owner's side of a lunio_curlm (http.c's session). None runs Lua. */
typedef struct lunio_curlm_ops {
  /* A transfer finished (a CURLMSG_DONE for easy, with its result). */
  void (*done)(lunio_curlm *m, CURL *easy, CURLcode rc);
  /* The end of a round of socket_action and done calls. */
  void (*after)(lunio_curlm *m);
  /* The last uv handle closed after lunio__curlm_close: free the owner. */
  void (*freed)(lunio_curlm *m);
  /* close_pending was set inside a callback that has now returned. */
  void (*close_due)(lunio_curlm *m);
} lunio_curlm_ops;

struct lunio_curlm {
  const lunio_curlm_ops *ops;
  lunio_loop *loop;
  CURLM *multi;
  uv_timer_t timer;              /* curl's timeout */
  uv_idle_t kick;                /* curl asked for a 0 ms timeout */
  struct lunio_curlm_poll **fds; /* fd -> its uv_poll_t context */
  int nfds;
  int open_handles; /* uv handles whose close callback has not run */
  int depth;        /* nesting of the engine's uv callbacks */
  int close_pending, shut;
};

/* Make m's multi handle and uv handles (unreferenced); 0 or UV_ENOMEM. */
int lunio__curlm_init(lunio_curlm *m, lunio_loop *loop,
                      const lunio_curlm_ops *ops);
/* Reference the uv handles (transfers active: keep the loop alive) or not. */
void lunio__curlm_ref(lunio_curlm *m, int on);
/* Clean the multi handle (its easy handles removed first) and close the uv
 * handles; ops->freed runs after the last close callback. Idempotent. */
void lunio__curlm_close(lunio_curlm *m);
/* The sockets being watched (for statistics). */
int lunio__curlm_sockets(const lunio_curlm *m);
/* CURLOPT_CLOSESOCKETFUNCTION with CLOSESOCKETDATA = the lunio_curlm. */
int lunio__curlm_closesocket(void *m, curl_socket_t fd);

#endif
