/*
 * timer.c - the binary min-heap behind every loop's timers.
 *
 * One uv_timer_t per loop is armed at the earliest deadline of this heap, so
 * 100,000 sleeping tasks cost one libuv handle and 8 bytes each here. Each
 * entry knows its own position (heap_idx), which makes removal on
 * cancellation O(log n) and keeps the heap free of dead entries.
 */
#include <stdlib.h>

#include "internal.h"

static int before(const lunio_task *a, const lunio_task *b) {
  /* Equal deadlines keep creation order for fairness. */
  return a->when < b->when || (a->when == b->when && a->id < b->id);
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
