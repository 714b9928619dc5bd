/*
 * errors.c - the one constructor of lunio error objects.
 *
 * A lunio error is a plain Lua table {kind = "...", message = "..."} sharing
 * the metatable "lunio.Error", whose __tostring prints "kind: message" and,
 * when the error crossed a task boundary, the task's traceback. Tables keep
 * errors cheap to create and easy to extend (.url, .status, .errors ...).
 */
#include <ctype.h>
#include <stdarg.h>
#include <string.h>

#include "internal.h"

static int error_tostring(lua_State *L) {
  luaL_Buffer b;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_buffinit(L, &b);
  lua_getfield(L, 1, "kind");
  luaL_addvalue(&b);
  luaL_addstring(&b, ": ");
  lua_getfield(L, 1, "message");
  if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)
    luaL_addvalue(&b);
  else {
    lua_pop(L, 1);
    luaL_addstring(&b, "(no message)");
  }
  lua_getfield(L, 1, "traceback");
  if (lua_type(L, -1) == LUA_TSTRING) {
    luaL_addchar(&b, '\n');
    luaL_addvalue(&b);
  } else
    lua_pop(L, 1);
  luaL_pushresult(&b);
  return 1;
}

/* Pushes {kind=, message=} with the Error metatable; fmt as lua_pushfstring. */
static void push_error(lua_State *L, const char *kind, const char *fmt,
                       va_list ap) {
  lua_createtable(L, 0, 3);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushvfstring(L, fmt, ap);
  lua_setfield(L, -2, "message");
  luaL_setmetatable(L, LUNIO_ERROR_MT);
}

int lunio__error_new(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  push_error(L, kind, fmt, ap);
  va_end(ap);
  return lua_gettop(L);
}

int lunio__error_raise(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  push_error(L, kind, fmt, ap);
  va_end(ap);
  return lua_error(L);
}

int lunio__uv_error_new(lua_State *L, int status, const char *what) {
  char kind[32];
  const char *name = uv_err_name(status);
  size_t i;
  /* "ECONNREFUSED" -> "econnrefused"; unknown codes keep libuv's name
   * ("Unknown system error -n") out of the kind. */
  for (i = 0; name[i] != '\0' && i < sizeof kind - 1; i++)
    kind[i] = isalnum((unsigned char)name[i])
                  ? (char)tolower((unsigned char)name[i])
                  : '_';
  kind[i] = '\0';
  if (strncmp(name, "Unknown", 7) == 0)
    strcpy(kind, "uv_error");
  if (what != NULL)
    lunio__error_new(L, kind, "%s: %s", what, uv_strerror(status));
  else
    lunio__error_new(L, kind, "%s", uv_strerror(status));
  lua_pushinteger(L, status);
  lua_setfield(L, -2, "code");
  return lua_gettop(L);
}

int lunio__uv_error_raise(lua_State *L, int status, const char *what) {
  lunio__uv_error_new(L, status, what);
  return lua_error(L);
}

int lunio__is_error(lua_State *L, int idx, const char *kind) {
  int match;
  if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
    return 0;
  luaL_getmetatable(L, LUNIO_ERROR_MT);
  match = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  if (!match || kind == NULL)
    return match;
  lua_getfield(L, idx, "kind");
  match =
      lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), kind) == 0;
  lua_pop(L, 1);
  return match;
}

/* error(kind, message [, fields]) -> a new error table (not raised). */
static int errors_new(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  const char *msg = luaL_optstring(L, 2, kind);
  lunio__error_new(L, kind, "%s", msg);
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    }
  }
  return 1;
}

/* is_error(value [, kind]) -> boolean */
static int errors_is(lua_State *L) {
  const char *kind = luaL_optstring(L, 2, NULL);
  lua_pushboolean(L, lunio__is_error(L, 1, kind));
  return 1;
}

int luaopen_lunio_errors(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"new_error", errors_new}, {"is_error", errors_is}, {NULL, NULL}};
  if (luaL_newmetatable(L, LUNIO_ERROR_MT)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0); /* into the module table at the top */
  return 0;
}
