/*
 * buf.c - byte queues and a pool of buffers, for the modules that move
 * bytes (http.c, stream.c).
 *
 * A lunio_buf is a byte queue: [off, len) of p is unread. It grows by
 * doubling from 1 KiB, either with realloc (no pool: HTTP bodies, whose
 * buffers http.c recycles itself) or with blocks taken from a lunio_pool
 * and given back when the queue empties (streams).
 *
 * Why a pool: glibc serves a request of 128 KiB or more with a fresh mmap
 * (its dynamic threshold only rises after such a block is freed, and never
 * covers the next one of the same size) and gives the top of its heap back
 * to the kernel when more than 128 KiB there is free. A stream that took a
 * new buffer per read would map and unmap memory, or trim and re-fault the
 * heap, on every read. The pool keeps blocks in power-of-two classes and
 * hands the same few back, so steady traffic asks malloc for nothing, and
 * lunio never changes malloc's process-wide settings to get there. A pool
 * belongs to one loop (a module's loop extension) and is not thread-safe.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Blocks kept per class: many of the small ones (a busy server has one per
 * connection with unread data), a couple of the large ones (bulk reads),
 * none beyond 512 KiB. */
static int class_keep(int c) {
  return c < 7    ? (int)(((size_t)1 << 20) / (LUNIO_POOL_MIN << c))
         : c < 10 ? 2
                  : 0;
}

/* The smallest class holding `size` bytes, or -1 beyond the largest. */
static int class_of(size_t size) {
  int c = 0;
  size_t cap = LUNIO_POOL_MIN;
  while (cap < size) {
    if (++c == LUNIO_POOL_CLASSES)
      return -1;
    cap <<= 1;
  }
  return c;
}

void *lunio__pool_get(lunio_pool *pool, size_t size, size_t *cap) {
  int c = class_of(size);
  void *p;
  if (c < 0) { /* beyond the classes: exactly what was asked for */
    p = malloc(size);
    *cap = p ? size : 0;
    return p;
  }
  *cap = LUNIO_POOL_MIN << c;
  if (pool != NULL && pool->n[c] > 0) {
    pool->kept -= *cap;
    return pool->blocks[c][--pool->n[c]];
  }
  p = malloc(*cap);
  if (p == NULL)
    *cap = 0;
  return p;
}

void lunio__pool_put(lunio_pool *pool, void *p, size_t cap) {
  int c;
  if (p == NULL)
    return;
  c = class_of(cap);
  if (pool == NULL || c < 0 || (LUNIO_POOL_MIN << c) != cap ||
      pool->n[c] >= class_keep(c)) {
    free(p);
    return;
  }
  if (pool->n[c] == pool->cap[c]) {
    int ncap = pool->cap[c] ? pool->cap[c] * 2 : 16;
    void **stack = realloc(pool->blocks[c], (size_t)ncap * sizeof *stack);
    if (stack == NULL) {
      free(p);
      return;
    }
    pool->blocks[c] = stack;
    pool->cap[c] = ncap;
  }
  pool->blocks[c][pool->n[c]++] = p;
  pool->kept += cap;
}

void lunio__pool_free(lunio_pool *pool) {
  int c;
  for (c = 0; c < LUNIO_POOL_CLASSES; c++) {
    while (pool->n[c] > 0)
      free(pool->blocks[c][--pool->n[c]]);
    free(pool->blocks[c]);
    pool->blocks[c] = NULL;
    pool->cap[c] = 0;
  }
  pool->kept = 0;
}

int lunio__buf_reserve(lunio_buf *b, size_t extra, lunio_pool *pool) {
  size_t need, cap;
  char *p;
  if (b->off > 0 && b->off == b->len)
    b->off = b->len = 0;
  if (b->len + extra <= b->cap)
    return 0;
  if (b->off > 0 && b->len - b->off + extra <= b->cap) {
    /* compact rather than grow */
    memmove(b->p, b->p + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
    return 0;
  }
  need = b->len - b->off + extra;
  if (need < extra)
    return UV_ENOMEM; /* overflow */
  if (pool != NULL || b->p == NULL) {
    /* A fresh block: from the pool, or the first one of a realloc'd
     * queue (1 KiB and doubling, as realloc growth does below). */
    if (pool != NULL) {
      /* At least double: beyond the largest class the pool gives exact
       * sizes, and a queue growing by one read at a time (read_all of a
       * big stream) would copy itself on every read. */
      size_t want = b->cap * 2 > need ? b->cap * 2 : need;
      p = lunio__pool_get(pool, want, &cap);
    } else {
      cap = LUNIO_POOL_MIN;
      while (cap < need)
        cap *= 2;
      p = malloc(cap);
    }
    if (p == NULL)
      return UV_ENOMEM;
    if (b->len > b->off)
      memcpy(p, b->p + b->off, b->len - b->off);
    if (pool != NULL)
      lunio__pool_put(pool, b->p, b->cap);
    else
      free(b->p);
    b->len -= b->off;
    b->off = 0;
    b->p = p;
    b->cap = cap;
    return 0;
  }
  if (b->off > 0) { /* compact before growing */
    memmove(b->p, b->p + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
  }
  cap = b->cap ? b->cap : LUNIO_POOL_MIN;
  while (cap < need)
    cap *= 2;
  p = realloc(b->p, cap);
  if (p == NULL)
    return UV_ENOMEM;
  b->p = p;
  b->cap = cap;
  return 0;
}

int lunio__buf_add(lunio_buf *b, const void *s, size_t n, lunio_pool *pool) {
  int rc;
  if (n == 0)
    return 0;
  if ((rc = lunio__buf_reserve(b, n, pool)) != 0)
    return rc;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  return 0;
}

void lunio__buf_consume(lunio_buf *b, size_t n, lunio_pool *pool) {
  b->off += n;
  if (b->off < b->len)
    return;
  b->off = b->len = 0;
  if (pool != NULL) /* an empty queue holds no memory */
    lunio__buf_free(b, pool);
}

void lunio__buf_free(lunio_buf *b, lunio_pool *pool) {
  if (pool != NULL)
    lunio__pool_put(pool, b->p, b->cap);
  else
    free(b->p);
  memset(b, 0, sizeof *b);
}
