/*
 * dns.c - name resolution on libuv's thread pool: getaddrinfo and
 * getnameinfo, each awaited by the calling task through req.c.
 *
 * Results are plain Lua tables; nothing outlives the call. A task
 * cancelled while its lookup runs leaves the request to finish in the pool
 * (or be cancelled there, when still queued) and be freed by its callback.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct gai_req {
  lunio_req r;
  char *host; /* for the error message, freed by cleanup */
} gai_req;

static void gai_cleanup(lunio_req *r) {
  gai_req *g = (gai_req *)r;
  if (r->u.gai.addrinfo != NULL)
    uv_freeaddrinfo(r->u.gai.addrinfo);
  r->u.gai.addrinfo = NULL;
  free(g->host);
}

static void on_gai(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  (void)res; /* kept in req->addrinfo, freed by gai_cleanup */
  lunio__req_done(req->data, status);
}

static const char *family_name(int family) {
  return family == AF_INET6 ? "inet6" : family == AF_INET ? "inet" : "unix";
}

int lunio__parse_ip(const char *ip, int port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (uv_ip4_addr(ip, port, (struct sockaddr_in *)ss) == 0)
    return 0;
  if (uv_ip6_addr(ip, port, (struct sockaddr_in6 *)ss) == 0)
    return 0;
  return UV_EINVAL;
}

int lunio__push_sockaddr(lua_State *L, const struct sockaddr *sa) {
  char ip[INET6_ADDRSTRLEN];
  ip[0] = '\0';
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    uv_ip6_name(in6, ip, sizeof ip);
    lua_pushstring(L, ip);
    lua_pushinteger(L, ntohs(in6->sin6_port));
  } else if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    uv_ip4_name(in, ip, sizeof ip);
    lua_pushstring(L, ip);
    lua_pushinteger(L, ntohs(in->sin_port));
  } else {
    lua_pushnil(L);
    lua_pushnil(L);
  }
  return 2;
}

/* The frame is [host, port, family, socktype]; ctx is the request. */
static int gai_k(lua_State *L, int status, lua_KContext ctx) {
  gai_req *g = (gai_req *)ctx;
  const struct addrinfo *ai;
  int rc, n = 0;
  (void)status;
  rc = lunio__req_resumed(L, &g->r);
  if (rc < 0) {
    lua_pushfstring(L, "cannot resolve '%s'", g->host);
    lunio__req_free(&g->r);
    lunio__uv_error_new(L, rc, lua_tostring(L, -1));
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "host");
    return lua_error(L);
  }
  lua_newtable(L);
  for (ai = g->r.u.gai.addrinfo; ai != NULL; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
      continue;
    lua_createtable(L, 0, 3);
    lunio__push_sockaddr(L, ai->ai_addr);
    lua_setfield(L, -3, "port");
    lua_setfield(L, -2, "address");
    lua_pushstring(L, family_name(ai->ai_family));
    lua_setfield(L, -2, "family");
    lua_rawseti(L, -2, ++n);
  }
  lunio__req_free(&g->r);
  return 1;
}

static int check_family(lua_State *L, int arg) {
  static const char *const names[] = {"any", "inet", "inet6", NULL};
  static const int families[] = {AF_UNSPEC, AF_INET, AF_INET6};
  return families[luaL_checkoption(L, arg, "any", names)];
}

/* getaddrinfo(host [, port [, family [, socktype]]]) -> list of
 * {address=, family=, port=}. family "any" | "inet" | "inet6";
 * socktype "stream" (default) | "dgram". */
static int dns_getaddrinfo(lua_State *L) {
  static const char *const types[] = {"stream", "dgram", NULL};
  const char *host = luaL_checkstring(L, 1);
  char service[32];
  struct addrinfo hints;
  lunio_task *t;
  gai_req *g;
  int rc;
  service[0] = '\0';
  if (!lua_isnoneornil(L, 2)) {
    lua_Integer port = luaL_checkinteger(L, 2);
    luaL_argcheck(L, port >= 0 && port <= 65535, 2, "port out of range");
    snprintf(service, sizeof service, "%d", (int)port);
  }
  memset(&hints, 0, sizeof hints);
  hints.ai_family = check_family(L, 3);
  hints.ai_socktype =
      luaL_checkoption(L, 4, "stream", types) == 0 ? SOCK_STREAM : SOCK_DGRAM;
  luaL_argcheck(L, strlen(host) == lua_rawlen(L, 1), 1,
                "host name contains a NUL byte");
  t = lunio__check_in_task(L, "getaddrinfo");
  lua_settop(L, 4);
  g = (gai_req *)lunio__req_new(L, t->loop, sizeof *g);
  g->r.cleanup = gai_cleanup;
  g->host = strdup(host);
  rc = g->host == NULL
           ? UV_ENOMEM
           : uv_getaddrinfo(lunio__uv(t->loop), &g->r.u.gai, on_gai, host,
                            service[0] ? service : NULL, &hints);
  if (rc < 0) {
    lunio__req_free(&g->r);
    lunio__uv_error_new(L, rc, "getaddrinfo");
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "host");
    return lua_error(L);
  }
  return lunio__req_await(L, &g->r, t, (lua_KContext)g, gai_k);
}

static void on_gni(uv_getnameinfo_t *req, int status, const char *host,
                   const char *service) {
  (void)host; /* kept in req->host / req->service */
  (void)service;
  lunio__req_done(req->data, status);
}

/* The frame is [address, port]; ctx is the request. */
static int gni_k(lua_State *L, int status, lua_KContext ctx) {
  lunio_req *r = (lunio_req *)ctx;
  int rc;
  (void)status;
  rc = lunio__req_resumed(L, r);
  if (rc < 0) {
    lunio__req_free(r);
    lunio__uv_error_new(L, rc, "getnameinfo");
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "address");
    return lua_error(L);
  }
  lua_pushstring(L, r->u.gni.host);
  lua_pushstring(L, r->u.gni.service);
  lunio__req_free(r);
  return 2;
}

/* getnameinfo(address [, port]) -> host, service */
static int dns_getnameinfo(lua_State *L) {
  const char *addr = luaL_checkstring(L, 1);
  lua_Integer port = luaL_optinteger(L, 2, 0);
  struct sockaddr_storage ss;
  lunio_task *t;
  lunio_req *r;
  int rc;
  luaL_argcheck(L, port >= 0 && port <= 65535, 2, "port out of range");
  if (lunio__parse_ip(addr, (int)port, &ss) != 0)
    return luaL_argerror(L, 1, "not an IPv4 or IPv6 address");
  t = lunio__check_in_task(L, "getnameinfo");
  lua_settop(L, 2);
  r = lunio__req_new(L, t->loop, sizeof *r);
  rc = uv_getnameinfo(lunio__uv(t->loop), &r->u.gni, on_gni,
                      (const struct sockaddr *)&ss, 0);
  if (rc < 0) {
    lunio__req_free(r);
    return lunio__uv_error_raise(L, rc, "getnameinfo");
  }
  return lunio__req_await(L, r, t, (lua_KContext)r, gni_k);
}

void lunio__open_dns(lua_State *L) {
  static const luaL_Reg funcs[] = {{"getaddrinfo", dns_getaddrinfo},
                                   {"getnameinfo", dns_getnameinfo},
                                   {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0); /* into the module table at the top */
}
