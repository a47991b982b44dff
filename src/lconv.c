/* lconv.c: Lua values <-> jansson values, exactly: integers stay integers, floats
 * keep 17 significant digits, strings must be UTF-8. Checking is a separate pass
 * so that bad input raises before anything is touched. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "lwsup.h"

#define TEXT_(x) #x
#define TEXT(x) TEXT_(x)
#define DEPTH_TEXT TEXT(LW_MAXDEPTH)

/* The key path of the value being checked, for error messages. */
typedef struct path {
  const void *seen[LW_MAXDEPTH + 1]; /* tables on the path: cycle detection */
  const char *key[LW_MAXDEPTH + 1];  /* NULL for an array index */
  size_t len[LW_MAXDEPTH + 1];       /* key length, or the index */
  int depth;
} path;

static int utf8_valid(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t k;
    uint32_t cp;
    if (c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0xc2 && c <= 0xdf) k = 1, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) k = 2, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) k = 3, cp = c & 0x07;
    else return 0;
    if (n - i <= k) return 0;
    for (size_t j = 1; j <= k; j++) {
      if ((s[i + j] & 0xc0) != 0x80) return 0;
      cp = (cp << 6) | (s[i + j] & 0x3f);
    }
    if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += k + 1;
  }
  return 1;
}

static int fail(lua_State *L, const path *p, const char *fmt, const char *arg) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= p->depth; i++) {
    if (p->key[i]) {
      if (i > 1) luaL_addchar(&b, '.');
      luaL_addlstring(&b, p->key[i], p->len[i]);
    } else {
      lua_pushfstring(L, "[%I]", (lua_Integer)p->len[i]);
      luaL_addvalue(&b);
    }
  }
  if (p->depth == 0) luaL_addstring(&b, "patch");
  luaL_addstring(&b, ": ");
  lua_pushfstring(L, fmt, arg);
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  return lua_error(L);
}

static void check_value(lua_State *L, int idx, path *p);

/* A table is an array when its keys are exactly 1..n with n >= 1; otherwise every
 * key must be a string. Returns 1 for an array. */
static int check_table(lua_State *L, int idx, path *p) {
  lua_Unsigned n = lua_rawlen(L, idx);
  lua_Integer nint = 0, nstr = 0;
  const void *self = lua_topointer(L, idx);
  if (p->depth >= LW_MAXDEPTH) fail(L, p, "%s", "nesting deeper than " DEPTH_TEXT " levels");
  for (int i = 0; i <= p->depth; i++)
    if (p->seen[i] == self) fail(L, p, "%s", "cycle: a table contains itself");
  p->depth++;
  p->seen[p->depth] = self;
  luaL_checkstack(L, 4, "patch too deep");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int kt = lua_type(L, -2);
    if (kt == LUA_TSTRING) {
      size_t len;
      const char *k = lua_tolstring(L, -2, &len);
      p->key[p->depth] = k;
      p->len[p->depth] = len;
      if (!utf8_valid((const unsigned char *)k, len)) fail(L, p, "%s", "key is not valid UTF-8");
      nstr++;
    } else if (lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1 &&
               (lua_Unsigned)lua_tointeger(L, -2) <= n) {
      p->key[p->depth] = NULL;
      p->len[p->depth] = (size_t)lua_tointeger(L, -2);
      nint++;
    } else {
      p->depth--;
      lua_pushfstring(L, "key %s is not a string", luaL_tolstring(L, -2, NULL));
      fail(L, p, "%s", lua_tostring(L, -1));
    }
    check_value(L, lua_gettop(L), p);
    lua_pop(L, 1);
  }
  p->depth--;
  if (nint && nstr) fail(L, p, "%s", "table mixes array items and string keys");
  if (nint && (lua_Unsigned)nint != n) fail(L, p, "%s", "sparse array (holes are not encodable)");
  return nint > 0;
}

static void check_value(lua_State *L, int idx, path *p) {
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (!utf8_valid((const unsigned char *)s, len)) fail(L, p, "%s", "string is not valid UTF-8");
    return;
  }
  case LUA_TNUMBER:
    if (!lua_isinteger(L, idx)) {
      lua_Number x = lua_tonumber(L, idx);
      if (isnan(x)) fail(L, p, "%s", "cannot encode NaN");
      if (isinf(x)) fail(L, p, "%s", "cannot encode an infinite number");
    }
    return;
  case LUA_TBOOLEAN:
    return;
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) return; /* wsup.null, cjson.null */
    break;
  case LUA_TTABLE:
    check_table(L, idx, p);
    return;
  default:
    break;
  }
  fail(L, p, "cannot encode a %s", luaL_typename(L, idx));
}

void lc_check_patch(lua_State *L, int idx) {
  path p;
  idx = lua_absindex(L, idx);
  p.depth = 0;
  p.seen[0] = NULL;
  if (!lua_istable(L, idx))
    luaL_error(L, "patch: expected a table, got %s", luaL_typename(L, idx));
  if (check_table(L, idx, &p)) luaL_error(L, "patch: expected an object (string keys), got an array");
}

static int is_array(lua_State *L, int idx) {
  int r;
  lua_pushnil(L);
  if (!lua_next(L, idx)) return 0;
  r = lua_type(L, -2) == LUA_TNUMBER;
  lua_pop(L, 2);
  return r;
}

static json_t *build_table(lua_State *L, int idx) {
  json_t *v;
  luaL_checkstack(L, 4, "patch too deep");
  if (is_array(L, idx)) {
    lua_Unsigned n = lua_rawlen(L, idx);
    v = json_array();
    for (lua_Unsigned i = 1; i <= n; i++) {
      lua_rawgeti(L, idx, (lua_Integer)i);
      json_array_append_new(v, lc_build(L, -1));
      lua_pop(L, 1);
    }
    return v;
  }
  v = json_object();
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t len;
    const char *k = lua_tolstring(L, -2, &len);
    json_object_setn_new_nocheck(v, k, len, lc_build(L, -1));
    lua_pop(L, 1);
  }
  return v;
}

json_t *lc_build(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    return json_stringn_nocheck(s, len);
  }
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) return json_integer((json_int_t)lua_tointeger(L, idx));
    return json_real(lua_tonumber(L, idx));
  case LUA_TBOOLEAN:
    return json_boolean(lua_toboolean(L, idx));
  case LUA_TTABLE:
    return build_table(L, idx);
  default:
    return json_null();
  }
}

void lc_apply(lua_State *L, int idx, json_t *pending, const pt_keys *k) {
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t len;
    const char *key = lua_tolstring(L, -2, &len);
    int v = lua_gettop(L);
    if (lua_istable(L, v) && !is_array(L, v) && pt_is_merge_key(k, key, len)) {
      json_t *slot = pt_merge_slot(pending, key, len);
      lua_pushnil(L);
      while (lua_next(L, v)) {
        size_t l2;
        const char *k2 = lua_tolstring(L, -2, &l2);
        json_object_setn_new_nocheck(slot, k2, l2, lc_build(L, -1));
        lua_pop(L, 1);
      }
    } else {
      json_object_setn_new_nocheck(pending, key, len, lc_build(L, v));
    }
    lua_pop(L, 1);
  }
}

void lc_push(lua_State *L, const json_t *v) {
  luaL_checkstack(L, 3, "JSON too deep");
  switch (json_typeof(v)) {
  case JSON_OBJECT: {
    const char *k;
    size_t len;
    json_t *x;
    lua_createtable(L, 0, (int)json_object_size(v));
    json_object_keylen_foreach((json_t *)v, k, len, x) {
      lua_pushlstring(L, k, len);
      lc_push(L, x);
      lua_rawset(L, -3);
    }
    return;
  }
  case JSON_ARRAY: {
    size_t n = json_array_size(v);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
      lc_push(L, json_array_get(v, i));
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return;
  }
  case JSON_STRING:
    lua_pushlstring(L, json_string_value(v), json_string_length(v));
    return;
  case JSON_INTEGER:
    lua_pushinteger(L, (lua_Integer)json_integer_value(v));
    return;
  case JSON_REAL:
    lua_pushnumber(L, json_real_value(v));
    return;
  case JSON_TRUE:
  case JSON_FALSE:
    lua_pushboolean(L, json_is_true(v));
    return;
  case JSON_NULL:
    lua_pushlightuserdata(L, NULL);
    return;
  }
}
