/* W5 limit: the bare HTTP client mechanism lunio.http is built on, with no
 * runtime around it. One libcurl multi handle driven by libuv through the
 * multi-socket API: a uv_poll_t per socket (kept in an fd table), one
 * uv_timer_t for curl's timeout, CONC easy handles reused for COUNT GETs of
 * URL over keep-alive connections, and a write callback that only counts
 * bytes.
 *
 * Build: cc -O2 -o w5_client w5_client.c \
 *          $(pkg-config --cflags --libs libuv libcurl)
 * Usage: w5_client [--lunio-defaults] [--fresh-handles] URL COUNT CONC
 *
 * --lunio-defaults sets, once per easy handle, the options every lunio
 * request has by default (API.md): decompression (Accept-Encoding), a
 * cookie jar shared by the session, http/https only, redirects followed,
 * the idle (low-speed) and connect timeouts, its User-Agent and an empty
 * Expect, an error buffer. It measures what those features cost libcurl
 * itself, apart from lunio's runtime.
 * --fresh-handles cleans each easy handle up after its transfer and makes
 * and configures a new one for the next, as lunio must with libcurl before
 * 8.1.0 (a reused handle can read freed memory there: curl PR #11103; see
 * src/http.c easy_put). Connections are kept by the multi handle either way.
 * Prints: RESULT req_per_s=... mb_per_s=... elapsed_s=... requests=...
 *
 * Integration rules followed (see the project's notes on libcurl+libuv):
 * curl is never called from its own callbacks; a 0 ms timeout is clamped
 * to 1 ms (libuv < 1.48 would spin); REMOVE stops the poll at once and the
 * context is freed in the close callback; libcurl's socket closes go
 * through CLOSESOCKETFUNCTION so a dead fd is never left in epoll. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#define MAX_FD 65536

typedef struct {
  uv_poll_t poll;
  curl_socket_t fd;
} sock_ctx;

static uv_loop_t *loop;
static CURLM *multi;
static uv_timer_t timer;
static sock_ctx *fds[MAX_FD];
static const char *url;
static int lunio_defaults, fresh_handles;
static CURLSH *share;
static struct curl_slist *headers;
static char errbuf[CURL_ERROR_SIZE];
static long remaining; /* requests not yet started */
static long completed, failed, total_requests;
static unsigned long long total_bytes;

static size_t on_write(char *p, size_t size, size_t n, void *ud) {
  (void)p;
  (void)ud;
  total_bytes += size * n;
  return size * n;
}

static void on_close(uv_handle_t *h) { free(h->data); }

static void forget_socket(curl_socket_t fd) {
  if (fd < 0 || fd >= MAX_FD || !fds[fd])
    return;
  sock_ctx *c = fds[fd];
  fds[fd] = NULL;
  uv_poll_stop(&c->poll);
  uv_close((uv_handle_t *)&c->poll, on_close);
}

static int on_closesocket(void *ud, curl_socket_t fd) {
  (void)ud;
  forget_socket(fd);
  return close(fd);
}

static void start_request(CURL *e) {
  remaining--;
  CURLMcode rc = curl_multi_add_handle(multi, e);
  if (rc != CURLM_OK) {
    fprintf(stderr, "add_handle: %s\n", curl_multi_strerror(rc));
    exit(1);
  }
}

static CURL *new_easy(void);

/* Called from loop context only (after socket_action returned). */
static void drain_done(void) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(multi, &left))) {
    if (m->msg != CURLMSG_DONE)
      continue;
    CURL *e = m->easy_handle;
    CURLcode res = m->data.result;
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (res != CURLE_OK || status != 200) {
      if (failed++ < 5)
        fprintf(stderr, "request failed: %s status %ld\n",
                curl_easy_strerror(res), status);
    }
    completed++;
    curl_multi_remove_handle(multi, e);
    if (remaining > 0 && !fresh_handles)
      start_request(e); /* reuse the easy handle and its connection */
    else {
      curl_easy_cleanup(e);
      if (remaining > 0)
        start_request(new_easy());
    }
  }
  if (completed == total_requests)
    uv_stop(loop);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  sock_ctx *c = h->data;
  int flags = 0;
  int running;
  if (status < 0)
    flags = CURL_CSELECT_ERR | CURL_CSELECT_IN | CURL_CSELECT_OUT;
  else {
    if (events & UV_READABLE)
      flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
      flags |= CURL_CSELECT_OUT;
  }
  curl_multi_socket_action(multi, c->fd, flags, &running);
  drain_done();
}

static void on_timeout(uv_timer_t *t) {
  (void)t;
  int running;
  curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
  drain_done();
}

static int on_timer(CURLM *m, long ms, void *ud) {
  (void)m;
  (void)ud;
  if (ms < 0)
    uv_timer_stop(&timer);
  else
    uv_timer_start(&timer, on_timeout, ms == 0 ? 1 : (uint64_t)ms, 0);
  return 0;
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *ud,
                     void *sockp) {
  (void)e;
  (void)ud;
  (void)sockp;
  if (fd < 0 || fd >= MAX_FD)
    return 0;
  if (what == CURL_POLL_REMOVE) {
    forget_socket(fd);
    return 0;
  }
  sock_ctx *c = fds[fd];
  if (!c) {
    c = calloc(1, sizeof *c);
    c->fd = fd;
    if (uv_poll_init_socket(loop, &c->poll, fd) != 0) {
      fprintf(stderr, "uv_poll_init_socket failed for fd %d\n", (int)fd);
      free(c);
      return 0;
    }
    c->poll.data = c;
    fds[fd] = c;
  }
  int ev = 0;
  if (what & CURL_POLL_IN)
    ev |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    ev |= UV_WRITABLE;
  uv_poll_start(&c->poll, ev, on_poll);
  return 0;
}

/* The options of a lunio request without options (see the top). */
static void set_lunio_defaults(CURL *e) {
  if (share == NULL) {
    share = curl_share_init();
    curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_COOKIE);
    curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    headers = curl_slist_append(NULL, "User-Agent: lunio/" "0.1.0");
    headers = curl_slist_append(headers, "Expect:");
  }
  curl_easy_setopt(e, CURLOPT_SHARE, share);
  curl_easy_setopt(e, CURLOPT_COOKIEFILE, "");
  curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 30L);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
}

/* An easy handle set up for one GET of url. */
static CURL *new_easy(void) {
  CURL *e = curl_easy_init();
  if (e == NULL) {
    fprintf(stderr, "curl_easy_init failed\n");
    exit(1);
  }
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_closesocket);
  if (lunio_defaults)
    set_lunio_defaults(e);
  return e;
}

int main(int argc, char **argv) {
  for (;;) {
    if (argc > 1 && strcmp(argv[1], "--lunio-defaults") == 0)
      lunio_defaults = 1;
    else if (argc > 1 && strcmp(argv[1], "--fresh-handles") == 0)
      fresh_handles = 1;
    else
      break;
    argv++;
    argc--;
  }
  if (argc < 4) {
    fprintf(stderr,
            "usage: %s [--lunio-defaults] [--fresh-handles] URL COUNT CONC\n",
            argv[0]);
    return 2;
  }
  url = argv[1];
  long count = atol(argv[2]);
  long conc = atol(argv[3]);
  if (conc > count)
    conc = count;

  curl_global_init(CURL_GLOBAL_DEFAULT);
  loop = uv_default_loop();
  uv_timer_init(loop, &timer);
  multi = curl_multi_init();
  curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, conc);
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, conc);

  remaining = total_requests = count;
  double t0 = uv_hrtime() * 1e-9;
  for (long i = 0; i < conc; i++)
    start_request(new_easy());
  uv_run(loop, UV_RUN_DEFAULT);
  double elapsed = uv_hrtime() * 1e-9 - t0;

  curl_multi_cleanup(multi);
  if (share != NULL)
    curl_share_cleanup(share);
  curl_slist_free_all(headers);
  uv_close((uv_handle_t *)&timer, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  curl_global_cleanup();

  if (completed != count || failed) {
    fprintf(stderr, "completed %ld of %ld, %ld failed\n", completed, count,
            failed);
    return 1;
  }
  printf("RESULT req_per_s=%.6g mb_per_s=%.6g elapsed_s=%.6g requests=%ld "
         "bytes=%llu\n",
         count / elapsed, total_bytes / elapsed / 1e6, elapsed, count,
         total_bytes);
  return 0;
}
