/* W4 load generator, in C on libuv so that it is not the bottleneck: CONNS
 * connections to 127.0.0.1:PORT, each sending SIZE bytes and waiting for
 * all of them to come back before it sends again. After a WARMUP second it
 * counts round trips for SECONDS, and samples the server's CPU time
 * (utime + stime of /proc/PID/stat, every thread) at both ends.
 *
 * Build: cc -O2 -o w4_client w4_client.c $(pkg-config --cflags --libs libuv)
 * Usage: w4_client PORT SERVER_PID [CONNS=100] [SECONDS=10] [SIZE=64]
 * Prints: RESULT rt_per_s=... server_cpu_us_per_rt=... round_trips=...
 *         elapsed_s=... server_cpu_s=... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#define WARMUP_MS 1000

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  size_t got; /* bytes of the current echo received */
} conn;

static uv_loop_t *loop;
static conn *conns;
static int nconns, seconds, connected, failed;
static size_t size;
static char *msg;
static char readbuf[65536];
static int counting, stopping;
static unsigned long long round_trips;
static uint64_t t_start;
static double cpu_start;
static const char *server_pid;
static uv_timer_t timer;

/* CPU seconds (user + system) the server used so far. */
static double server_cpu(void) {
  char path[64], buf[1024], *p;
  unsigned long utime = 0, stime = 0;
  FILE *f;
  int i;
  snprintf(path, sizeof path, "/proc/%s/stat", server_pid);
  f = fopen(path, "r");
  if (f == NULL || fgets(buf, sizeof buf, f) == NULL) {
    if (f)
      fclose(f);
    return -1;
  }
  fclose(f);
  p = strrchr(buf, ')'); /* the command name may hold spaces */
  for (i = 0; p && i < 12; i++)
    p = strchr(p + 1, ' ');
  if (p == NULL || sscanf(p + 1, "%lu %lu", &utime, &stime) != 2)
    return -1;
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static void send_msg(conn *c);

static void on_written(uv_write_t *req, int status) {
  (void)req;
  if (status < 0 && !stopping) {
    fprintf(stderr, "w4_client: write: %s\n", uv_strerror(status));
    exit(1);
  }
}

static void send_msg(conn *c) {
  uv_buf_t b = uv_buf_init(msg, (unsigned)size);
  int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  if (n == (int)size)
    return;
  if (n < 0)
    n = 0;
  b = uv_buf_init(msg + n, (unsigned)(size - (size_t)n));
  uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_written);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(readbuf, sizeof readbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn *c = (conn *)s;
  (void)buf;
  if (n < 0) {
    if (!stopping) {
      fprintf(stderr, "w4_client: read: %s\n", uv_strerror((int)n));
      exit(1);
    }
    return;
  }
  c->got += (size_t)n;
  if (c->got >= size) {
    c->got -= size;
    if (counting)
      round_trips++;
    if (!stopping)
      send_msg(c);
    else if (!uv_is_closing((uv_handle_t *)s))
      uv_close((uv_handle_t *)s, NULL); /* nothing unread: a FIN, no RST */
  }
}

static void on_connect(uv_connect_t *req, int status) {
  conn *c = req->data;
  if (status < 0) {
    fprintf(stderr, "w4_client: connect: %s\n", uv_strerror(status));
    exit(1);
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  send_msg(c);
  connected++;
}

static void on_give_up(uv_timer_t *t) {
  int i;
  for (i = 0; i < nconns; i++)
    if (!uv_is_closing((uv_handle_t *)&conns[i].tcp))
      uv_close((uv_handle_t *)&conns[i].tcp, NULL);
  uv_close((uv_handle_t *)t, NULL);
}

static void on_timer(uv_timer_t *t) {
  if (!counting) { /* warm-up over */
    counting = 1;
    t_start = uv_hrtime();
    cpu_start = server_cpu();
    uv_timer_start(t, on_timer, (uint64_t)seconds * 1000, 0);
    return;
  }
  {
    double elapsed = (double)(uv_hrtime() - t_start) / 1e9;
    double cpu = server_cpu() - cpu_start;
    counting = 0;
    stopping = 1;
    printf("RESULT rt_per_s=%.1f server_cpu_us_per_rt=%.3f round_trips=%llu "
           "elapsed_s=%.3f server_cpu_s=%.3f conns=%d\n",
           (double)round_trips / elapsed,
           round_trips ? cpu * 1e6 / (double)round_trips : 0.0, round_trips,
           elapsed, cpu, connected);
    fflush(stdout);
    /* Each connection closes once its last echo is in; whatever is
     * still open a second later is closed anyway. */
    uv_timer_start(t, on_give_up, 1000, 0);
  }
}

int main(int argc, char **argv) {
  struct sockaddr_in addr;
  int i;
  if (argc < 3) {
    fprintf(stderr, "usage: w4_client PORT SERVER_PID [CONNS] [SECONDS] "
                    "[SIZE]\n");
    return 2;
  }
  server_pid = argv[2];
  nconns = argc > 3 ? atoi(argv[3]) : 100;
  seconds = argc > 4 ? atoi(argv[4]) : 10;
  size = argc > 5 ? (size_t)atoi(argv[5]) : 64;
  msg = malloc(size);
  memset(msg, 'x', size);
  loop = uv_default_loop();
  uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
  conns = calloc((size_t)nconns, sizeof *conns);
  for (i = 0; i < nconns; i++) {
    uv_tcp_init(loop, &conns[i].tcp);
    conns[i].connect.data = &conns[i];
    uv_tcp_connect(&conns[i].connect, &conns[i].tcp,
                   (struct sockaddr *)&addr, on_connect);
  }
  uv_timer_init(loop, &timer);
  uv_timer_start(&timer, on_timer, WARMUP_MS, 0);
  uv_run(loop, UV_RUN_DEFAULT);
  return failed;
}
