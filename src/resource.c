/*
 * resource.c - what a loop must close when it closes: registered resources
 * (sessions, streams, servers, processes ...) and module extensions (the
 * per-loop state of a module: the HTTP engine's buffer pool, a thread
 * pool ...).
 *
 * loop.c knows no module by name: a module registers each open thing with
 * lunio__resource_add and its per-loop state with lunio__loop_ext, and the
 * loop's teardown closes them all, newest first, whatever order they were
 * made in. Resources close first (they may use their module's state), then
 * extensions; extensions are freed only after libuv ran every close
 * callback, since those callbacks may still reach them.
 */
#include <stdlib.h>

#include "internal.h"

struct lunio_ext {
  lunio_ext *next;
  const lunio_ext_ops *ops;
  int closed;
  /* the module's state follows, suitably aligned */
  union {
    void *p;
    double d;
    long long ll;
  } data[];
};

void lunio__resource_add(lunio_loop *loop, lunio_resource *r,
                         const lunio_resource_ops *ops) {
  r->ops = ops;
  r->loop = loop;
  r->prev = NULL;
  r->next = loop->resources;
  if (loop->resources != NULL)
    loop->resources->prev = r;
  loop->resources = r;
}

void lunio__resource_remove(lunio_resource *r) {
  lunio_loop *loop = r->loop;
  if (loop == NULL)
    return;
  if (r->prev != NULL)
    r->prev->next = r->next;
  else
    loop->resources = r->next;
  if (r->next != NULL)
    r->next->prev = r->prev;
  r->next = r->prev = NULL;
  r->loop = NULL;
}

void lunio__resources_close(lunio_loop *loop) {
  /* Unregister before closing: close may free r, or register others. */
  while (loop->resources != NULL) {
    lunio_resource *r = loop->resources;
    lunio__resource_remove(r);
    r->ops->close(r);
  }
}

int lunio__resources_count(lunio_loop *loop) {
  lunio_resource *r;
  int n = 0;
  for (r = loop->resources; r != NULL; r = r->next)
    n++;
  return n;
}

void *lunio__loop_ext_peek(lunio_loop *loop, const lunio_ext_ops *ops) {
  lunio_ext *e;
  for (e = loop->exts; e != NULL; e = e->next)
    if (e->ops == ops)
      return e->data;
  return NULL;
}

void *lunio__loop_ext(lunio_loop *loop, const lunio_ext_ops *ops) {
  lunio_ext *e;
  void *data = lunio__loop_ext_peek(loop, ops);
  if (data != NULL)
    return data;
  if (loop->closing || loop->closed)
    return NULL;
  e = calloc(1, sizeof *e + ops->size);
  if (e == NULL)
    return NULL;
  e->ops = ops;
  e->next = loop->exts;
  loop->exts = e;
  return e->data;
}

void lunio__exts_close(lunio_loop *loop) {
  lunio_ext *e;
  for (e = loop->exts; e != NULL; e = e->next)
    if (!e->closed) {
      e->closed = 1;
      if (e->ops->close != NULL)
        e->ops->close(loop, e->data);
    }
}

void lunio__exts_free(lunio_loop *loop) {
  while (loop->exts != NULL) {
    lunio_ext *e = loop->exts;
    loop->exts = e->next;
    if (e->ops->free != NULL)
      e->ops->free(loop, e->data);
    free(e);
  }
}
