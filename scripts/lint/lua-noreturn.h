/* lua-noreturn.h: force-included (-include) by scripts/lint.sh when clang-tidy
 * analyses src/ and test/; never part of a build.
 *
 * Lua's error functions never return (they longjmp), but lua.h and lauxlib.h declare
 * them as returning int, so clang's static analyser follows paths through them and
 * reports null dereferences right after `if (!p) luaL_error(...)`, as in
 * `if (!(h = calloc(...))) luaL_error(L, "out of memory"); h->url = ...`.
 * Redeclaring them noreturn removes those false paths and nothing else. */
#ifndef WSUP_LINT_LUA_NORETURN_H
#define WSUP_LINT_LUA_NORETURN_H
#include <lua.h>
#include <lauxlib.h>

LUA_API int(lua_error)(lua_State *L) __attribute__((noreturn));
LUALIB_API int(luaL_error)(lua_State *L, const char *fmt, ...) __attribute__((noreturn));
LUALIB_API int(luaL_argerror)(lua_State *L, int arg, const char *extramsg) __attribute__((noreturn));
LUALIB_API int(luaL_typeerror)(lua_State *L, int arg, const char *tname) __attribute__((noreturn));
#endif
