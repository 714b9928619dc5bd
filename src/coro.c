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
 * While an inner coroutine runs, the loop's running_co names it: that is
 * how an await inside it knows which task it works for, and how a parked
 * coroutine tells the scheduler's resumes from anybody else's. The loop's
 * chain_yieldable says whether every coroutine between it and the
 * scheduler can still yield (not inside table.sort's comparator, say).
 */
#include <string.h>

#include "internal.h"

static lua_State *check_co(lua_State *L, int arg) {
  lua_State *co = lua_tothread(L, arg);
  luaL_argexpected(L, co != NULL, arg, "coroutine");
  return co;
}

static int resume_k(lua_State *L, int status, lua_KContext ctx);

/* Whether the value at idx of co is the shared "refused resume" error: co
 * was parked in a lunio await of another task and refused our resume. */
static int is_refusal(lua_State *L, lua_State *co) {
  int same;
  lunio__push_refusal(L);
  lua_pushvalue(co, -1);
  lua_xmove(co, L, 1);
  same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same;
}

/* Resumes co with the n values at the top of L; `owner` is the task co is
 * parked for (when the task's own resume comes down to it), whose token
 * goes along so that co's continuation accepts the resume. */
static int resume_inner(lua_State *L, lua_State *co, int n, lunio_task *owner) {
  /* with an owner, L runs for it (lunio__resume_ok checked that) */
  lunio_task *t = owner != NULL ? owner : lunio__task_of(L);
  lunio_loop *loop = t != NULL ? t->loop : NULL;
  lua_State *prev_co = NULL;
  unsigned prev_yieldable = 0;
  int status, nres;
  if (lua_status(co) == LUA_OK && lua_gettop(co) == 0) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "cannot resume dead coroutine");
    return 2;
  }
  if (!lua_checkstack(co, n + 1)) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "too many arguments to resume");
    return 2;
  }
  lua_xmove(L, co, n);
  if (owner != NULL) {
    lua_pushlightuserdata(co, owner);
    n++;
  }
  if (loop != NULL) { /* co runs for t until it returns or yields */
    prev_co = loop->running_co;
    prev_yieldable = loop->chain_yieldable;
    loop->running_co = co;
    loop->chain_yieldable = prev_yieldable && lua_isyieldable(L);
  }
  status = lua_resume(co, L, n, &nres);
  if (loop != NULL) {
    loop->running_co = prev_co;
    loop->chain_yieldable = prev_yieldable;
  }
  if (status == LUA_YIELD && loop != NULL && loop->awaited) {
    /* An await inside co: suspend this coroutine too (keeping the mark
     * for whoever resumed us) and carry the wake values down later. The
     * await only parked because the whole chain can yield. */
    lua_pop(co, nres);
    lua_settop(L, 1);
    return lua_yieldk(L, 0, (lua_KContext)t, resume_k);
  }
  if (status == LUA_YIELD && nres == 1 && is_refusal(L, co)) {
    lua_pop(co, 1);
    lunio__push_refusal(L);
    lua_getfield(L, -1, "message");
    return lunio__error_raise(L, "invalid_state", "%s", lua_tostring(L, -1));
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

/* The frame is [co]; ctx is the task that parked. */
static int resume_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  if (!lunio__resume_ok(L, (lunio_task *)ctx)) {
    lua_settop(L, 1);
    return lunio__refuse_resume(L, ctx, resume_k);
  }
  return resume_inner(L, lua_tothread(L, 1), lua_gettop(L) - 1,
                      (lunio_task *)ctx);
}

static int co_resume(lua_State *L) {
  lua_State *co = check_co(L, 1);
  return resume_inner(L, co, lua_gettop(L) - 1, NULL);
}

static int co_create(lua_State *L) {
  lua_State *co;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  return 1;
}

void lunio__open_coroutine(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"create", co_create}, {"resume", co_resume}, {NULL, NULL}};
  luaL_newlib(L, funcs);
}
