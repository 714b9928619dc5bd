/*
 * coro.c - lunio.coroutine: coroutines that may await inside tasks.
 *
 * Generators and iterators are coroutines of their own. When code inside
 * such a coroutine awaits, lunio's yield must reach the scheduler, not the
 * generator's consumer. lunio.coroutine.resume therefore resumes the inner
 * coroutine and, when it stops for a lunio await (the loop's `awaited` mark
 * is set), yields the calling coroutine too; when the task is resumed, the
 * wake values are passed down into the inner coroutine. Ordinary yields go
 * to the resumer, as with the standard library.
 *
 * The inner coroutine learns which task it works for through its
 * LUA_EXTRASPACE, set from the resumer's on every resume.
 */
#include "internal.h"

static lua_State *check_co(lua_State *L, int arg) {
  lua_State *co = lua_tothread(L, arg);
  luaL_argexpected(L, co != NULL, arg, "coroutine");
  return co;
}

static int resume_k(lua_State *L, int status, lua_KContext ctx);

/* Resumes co with the n values at the top of L. */
static int resume_inner(lua_State *L, lua_State *co, int n) {
  lunio_task *t = lunio__task_of(L);
  int status, nres;
  if (lua_status(co) == LUA_OK && lua_gettop(co) == 0) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "cannot resume dead coroutine");
    return 2;
  }
  if (!lua_checkstack(co, n)) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "too many arguments to resume");
    return 2;
  }
  LUNIO_TASK_OF(co) = t;
  lua_xmove(L, co, n);
  status = lua_resume(co, L, n, &nres);
  /* Forget the task: a later plain coroutine.resume of co must not let
   * an await inside it pass for the task's own. */
  LUNIO_TASK_OF(co) = NULL;
  if (status == LUA_YIELD && t != NULL && t->loop->awaited) {
    /* An await inside co: suspend this coroutine too (keeping the mark
     * for whoever resumed us) and carry the wake values down later. */
    lua_pop(co, nres);
    lua_settop(L, 1);
    return lua_yieldk(L, 0, 0, resume_k);
  }
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushboolean(L, 0);
      lua_pushliteral(L, "too many results to resume");
      return 2;
    }
    lua_pushboolean(L, 1);
    lua_xmove(co, L, nres);
    return nres + 1;
  }
  lua_pushboolean(L, 0);
  lua_xmove(co, L, 1);
  return 2;
}

static int resume_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return resume_inner(L, lua_tothread(L, 1), lua_gettop(L) - 1);
}

static int co_resume(lua_State *L) {
  lua_State *co = check_co(L, 1);
  return resume_inner(L, co, lua_gettop(L) - 1);
}

static int co_create(lua_State *L) {
  lua_State *co;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  co = lua_newthread(L);
  LUNIO_TASK_OF(co) = NULL;
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  return 1;
}

void lunio__open_coroutine(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"create", co_create}, {"resume", co_resume}, {NULL, NULL}};
  luaL_newlib(L, funcs);
}
