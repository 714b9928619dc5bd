/* W4 limit: a TCP echo server in C on libuv, with no runtime around it.
 * One 64 KiB read buffer for every connection (libuv reads into it and the
 * read callback writes what arrived back at once: uv_try_write, and only
 * what the socket did not take is copied into a uv_write request).
 *
 * Build: cc -O2 -o w4_server w4_server.c $(pkg-config --cflags --libs libuv)
 * Usage: w4_server [port]        (0 or none: a free port)
 * Prints "READY <port>" once listening; serves until killed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static char slab[65536];

typedef struct {
  uv_write_t req;
  char data[];
} wreq;

static void on_closed(uv_handle_t *h) { free(h); }

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(slab, sizeof slab);
}

static void on_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n < 0) {
    uv_close((uv_handle_t *)s, on_closed);
    return;
  }
  if (n > 0) {
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
    int done = uv_try_write(s, &b, 1);
    if (done < 0)
      done = 0;
    if (done < n) {
      wreq *w = malloc(sizeof *w + (size_t)(n - done));
      memcpy(w->data, buf->base + done, (size_t)(n - done));
      b = uv_buf_init(w->data, (unsigned)(n - done));
      if (uv_write(&w->req, s, &b, 1, on_written) < 0) {
        free(w);
        uv_close((uv_handle_t *)s, on_closed);
      }
    }
  }
}

static void on_connection(uv_stream_t *server, int status) {
  uv_tcp_t *c;
  if (status < 0)
    return;
  c = malloc(sizeof *c);
  uv_tcp_init(server->loop, c);
  if (uv_accept(server, (uv_stream_t *)c) == 0) {
    uv_tcp_nodelay(c, 1);
    uv_read_start((uv_stream_t *)c, on_alloc, on_read);
  } else
    uv_close((uv_handle_t *)c, on_closed);
}

int main(int argc, char **argv) {
  uv_loop_t *loop = uv_default_loop();
  uv_tcp_t server;
  struct sockaddr_in addr;
  struct sockaddr_storage name;
  int len = sizeof name;
  uv_ip4_addr("127.0.0.1", argc > 1 ? atoi(argv[1]) : 0, &addr);
  uv_tcp_init(loop, &server);
  if (uv_tcp_bind(&server, (struct sockaddr *)&addr, 0) != 0 ||
      uv_listen((uv_stream_t *)&server, 511, on_connection) != 0) {
    fprintf(stderr, "w4_server: cannot listen\n");
    return 1;
  }
  uv_tcp_getsockname(&server, (struct sockaddr *)&name, &len);
  printf("READY %d\n", ntohs(((struct sockaddr_in *)&name)->sin_port));
  fflush(stdout);
  return uv_run(loop, UV_RUN_DEFAULT);
}
