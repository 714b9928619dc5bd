/*
 * clock.c - loop time (real or virtual) and the timer heap.
 *
 * Loop time is the monotonic clock plus an offset. Under virtual time (the
 * testing helper's autojump clock) the clock stands still between jumps and
 * runs at the real rate only while I/O is in flight, so timeouts around I/O
 * still work; sched.c makes the jumps.
 *
 * The binary min-heap behind every loop's timers:
 * One uv_timer_t per loop is armed at the earliest deadline of this heap, so
 * 100,000 sleeping tasks cost one libuv handle and 8 bytes each here. Each
 * entry knows its own position (heap_idx), which makes removal on
 * cancellation O(log n) and keeps the heap free of dead entries.
 */
#include <assert.h>
#include <math.h>
#include <stdlib.h>

#include "internal.h"

static double real_time(void) { return (double)uv_hrtime() / 1e9; }

void lunio__io_begin(lunio_loop *loop) {
  if (loop->io_pending++ == 0)
    loop->vt_io_start = real_time();
}

void lunio__io_end(lunio_loop *loop) {
  if (--loop->io_pending == 0 && loop->virtual_time)
    loop->vt_offset += real_time() - loop->vt_io_start;
}

double lunio__deadline(double now, double delay) {
  double when = now + delay;
  /* Rounding may land a hair early; a sleeper must see `delay` pass. */
  if (when - now < delay)
    when = nextafter(when, HUGE_VAL);
  return when;
}

double lunio__time(lunio_loop *loop) {
  if (loop->virtual_time)
    return loop->vt_offset +
           (loop->io_pending > 0 ? real_time() - loop->vt_io_start : 0);
  return real_time() + loop->vt_offset;
}

/* ---- the heap ------------------------------------------------------------ */

static int before(const lunio_task *a, const lunio_task *b) {
  /* Equal deadlines keep creation order for fairness. */
  return a->u.when < b->u.when || (a->u.when == b->u.when && a->id < b->id);
}

static void place(lunio_heap *h, uint32_t i, lunio_task *t) {
  h->items[i] = t;
  t->heap_idx = i + 1;
}

static void sift_up(lunio_heap *h, uint32_t i) {
  lunio_task *t = h->items[i];
  while (i > 0) {
    uint32_t parent = (i - 1) / 2;
    if (!before(t, h->items[parent]))
      break;
    place(h, i, h->items[parent]);
    i = parent;
  }
  place(h, i, t);
}

static void sift_down(lunio_heap *h, uint32_t i) {
  lunio_task *t = h->items[i];
  for (;;) {
    uint32_t child = 2 * i + 1;
    if (child >= h->len)
      break;
    if (child + 1 < h->len && before(h->items[child + 1], h->items[child]))
      child++;
    if (!before(h->items[child], t))
      break;
    place(h, i, h->items[child]);
    i = child;
  }
  place(h, i, t);
}

int lunio__heap_push(lunio_heap *h, lunio_task *t) {
  /* A task sits in the heap at most once: a second entry would make the
   * timer pass wake it twice (and spin on the stale entry). */
  assert(t->heap_idx == 0);
  if (h->len == h->cap) {
    uint32_t cap = h->cap ? h->cap * 2 : 64;
    lunio_task **items = realloc(h->items, cap * sizeof *items);
    if (items == NULL)
      return UV_ENOMEM;
    h->items = items;
    h->cap = cap;
  }
  place(h, h->len++, t);
  sift_up(h, h->len - 1);
  return 0;
}

void lunio__heap_remove(lunio_heap *h, lunio_task *t) {
  uint32_t i;
  lunio_task *last;
  if (t->heap_idx == 0)
    return;
  i = t->heap_idx - 1;
  t->heap_idx = 0;
  last = h->items[--h->len];
  if (i == h->len)
    return;
  place(h, i, last);
  if (i > 0 && before(last, h->items[(i - 1) / 2]))
    sift_up(h, i);
  else
    sift_down(h, i);
}

lunio_task *lunio__heap_peek(const lunio_heap *h) {
  return h->len ? h->items[0] : NULL;
}

void lunio__heap_free(lunio_heap *h) {
  free(h->items);
  h->items = NULL;
  h->len = h->cap = 0;
}
