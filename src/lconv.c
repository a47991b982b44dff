/* lconv.c: Lua values <-> stored JSON values, exactly: integers stay integers,
 * floats round-trip, strings must be UTF-8.
 *
 * lc_enqueue checks and converts a patch in one pass into a staging list, and only
 * then commits the list into pending: bad input raises before anything is touched,
 * and the cost is O(size of the patch). Nothing raises while values are half built:
 * errors travel back up as -1, each level frees what it built, and the error is
 * raised once the staging list is freed. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "lwsup.h"

#define TEXT_(x) #x
#define TEXT(x) TEXT_(x)
#define STAGE_SMALL 16

typedef struct ent {
  const char *mk, *k; /* borrowed from the patch table; mk NULL: a top-level key; k NULL: make the slot */
  size_t mkn, kn;
  ps_val v;           /* owned until committed */
} ent;

typedef struct conv {
  lua_State *L;
  const void *seen[LW_MAXDEPTH + 2]; /* tables on the path, for cycles */
  const char *key[LW_MAXDEPTH + 2];  /* path for messages; NULL for an array index */
  size_t len[LW_MAXDEPTH + 2];
  int depth;
  char err[512];
  ent small[STAGE_SMALL];
  ent *e;             /* small, or owned when larger */
  size_t n, cap;
} conv;

/* Valid UTF-8, no surrogates, nothing above U+10FFFF; the full check, byte by byte
 * (text_check below settles the common ASCII case without it). */
static int utf8_check(const unsigned char *s, size_t n) {
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
    if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += k + 1;
  }
  return 1;
}

/* Problems of a string, found by or-ing overlapping 4/8-byte loads (no loop per byte for
 * the common short ASCII string; only one with a high bit set takes the full check).
 * TEXT_BAD_UTF8, or with nul_bad (keys) TEXT_HAS_NUL, or 0. A key must hold no NUL: JSON
 * can write one ("\u0000") but servers' parsers refuse it in a key (jansson's does), so
 * one such key would have the whole coalesced payload dropped. Inlined with a constant
 * nul_bad, values pay nothing for the NUL test. */
#define HAS_ZERO64(w) (((w) - 0x0101010101010101u) & ~(w) & 0x8080808080808080u)
#define HAS_ZERO32(w) (((w) - 0x01010101u) & ~(w) & 0x80808080u)
enum { TEXT_BAD_UTF8 = 1, TEXT_HAS_NUL };
static inline int text_check(const unsigned char *s, size_t n, int nul_bad) {
  uint64_t any = 0, zero = 0;
  if (n >= 8) {
    for (size_t i = 0; i + 8 <= n; i += 8) {
      uint64_t w = bytes_load64(s + i);
      any |= w;
      if (nul_bad) zero |= HAS_ZERO64(w);
    }
    uint64_t w = bytes_load64(s + n - 8);
    any |= w;
    if (nul_bad) zero |= HAS_ZERO64(w);
  } else if (n >= 4) {
    uint32_t a = (uint32_t)bytes_load32(s), b = (uint32_t)bytes_load32(s + n - 4);
    any = a | b;
    if (nul_bad) zero = HAS_ZERO32(a) | HAS_ZERO32(b);
  } else if (n) {
    any = (uint64_t)s[0] | s[n / 2] | s[n - 1];
    if (nul_bad) zero = !s[0] || !s[n / 2] || !s[n - 1];
  }
  if (zero) return TEXT_HAS_NUL;
  return (any & 0x8080808080808080u) && !utf8_check(s, n) ? TEXT_BAD_UTF8 : 0;
}

static inline int utf8_valid(const unsigned char *s, size_t n) { return text_check(s, n, 0) == 0; }

/* A key's problem, or NULL. */
static inline const char *key_problem(const unsigned char *s, size_t n) {
  int t = text_check(s, n, 1);
  return t == TEXT_HAS_NUL ? "key contains a NUL byte" : t == TEXT_BAD_UTF8 ? "key is not valid UTF-8" : NULL;
}

#define KEY_SHOWN 64 /* bytes of one key shown in a message's path, then "..." */

/* Writes key k[0..n) for a message's path into b (room for KEY_SHOWN + 3 bytes): control
 * characters (C0, DEL, C1), line separators, and the high bytes of a key that is not UTF-8,
 * as \xNN, so that the message is one line of valid UTF-8. Returns the bytes written. */
static size_t show_key(char *b, const char *k, size_t n) {
  const unsigned char *s = (const unsigned char *)k;
  int utf8 = utf8_check(s, n);
  size_t at = 0;
  for (size_t i = 0; i < n;) {
    size_t len = utf8 && s[i] >= 0xc0 ? (s[i] >= 0xf0 ? 4 : s[i] >= 0xe0 ? 3 : 2) : 1;
    int esc = s[i] < 0x20 || s[i] == 0x7f || (!utf8 && s[i] >= 0x80) ||
              (s[i] == 0xc2 && s[i + 1] < 0xa0) || /* C1 controls (NEL breaks lines for some tools) */
              (s[i] == 0xe2 && s[i + 1] == 0x80 && (s[i + 2] == 0xa8 || s[i + 2] == 0xa9)); /* U+2028, U+2029 */
    if (at + (esc ? 4 * len : len) > KEY_SHOWN) {
      memcpy(b + at, "...", 3);
      return at + 3;
    }
    if (esc)
      for (size_t j = 0; j < len; j++) at += (size_t)snprintf(b + at, 5, "\\x%02x", s[i + j]);
    else
      memcpy(b + at, s + i, len), at += len;
    i += len;
  }
  return at;
}

/* Records "path: reason" and returns -1. A path too long for the message keeps its
 * start and its end (the bad value's place), cut between characters, with "..." between. */
static int fail(conv *cv, const char *reason) {
  char path[(LW_MAXDEPTH + 2) * (KEY_SHOWN + 4)];
  size_t at = 0, room = sizeof cv->err - 3 - strlen(reason); /* ": " and the NUL */
  for (int i = 1; i <= cv->depth; i++) {
    if (cv->key[i]) {
      if (i > 1) path[at++] = '.';
      at += show_key(path + at, cv->key[i], cv->len[i]);
    } else {
      at += (size_t)snprintf(path + at, KEY_SHOWN, "[%zu]", cv->len[i]);
    }
  }
  if (cv->depth == 0) at = (size_t)snprintf(path, sizeof path, "patch");
  if (at <= room) {
    snprintf(cv->err, sizeof cv->err, "%.*s: %s", (int)at, path, reason);
    return -1;
  }
  size_t head = room / 3, tail;
  while (head && ((unsigned char)path[head] & 0xc0) == 0x80) head--;
  tail = at - (room - head - 3);
  while (tail < at && ((unsigned char)path[tail] & 0xc0) == 0x80) tail++;
  snprintf(cv->err, sizeof cv->err, "%.*s...%.*s: %s", (int)head, path, (int)(at - tail), path + tail, reason);
  return -1;
}

static int fail_key(conv *cv, int kidx) {
  char reason[128];
  lua_State *L = cv->L;
  if (lua_type(L, kidx) == LUA_TNUMBER || lua_type(L, kidx) == LUA_TBOOLEAN) {
    lua_pushvalue(L, kidx);
    snprintf(reason, sizeof reason, "key %s is not a string", lua_type(L, -1) == LUA_TBOOLEAN
                                                                ? (lua_toboolean(L, -1) ? "true" : "false")
                                                                : lua_tostring(L, -1));
    lua_pop(L, 1);
  } else {
    snprintf(reason, sizeof reason, "key of type %s is not a string", luaL_typename(L, kidx));
  }
  return fail(cv, reason);
}

static int build(conv *cv, int idx, ps_val *out);

static int enter(conv *cv, int idx) {
  const void *self = lua_topointer(cv->L, idx);
  if (cv->depth >= LW_MAXDEPTH) return fail(cv, "nesting deeper than " TEXT(LW_MAXDEPTH) " levels");
  for (int i = 1; i <= cv->depth; i++)
    if (cv->seen[i] == self) return fail(cv, "cycle: a table contains itself");
  /* A C function starts with LUA_MINSTACK (20) free slots; a level takes 2 or 3
   * (key, value, and an array walk or an error message): 15 at most by depth 6. */
  if (cv->depth >= 6 && !lua_checkstack(cv->L, 4)) return fail(cv, "too deep for the Lua stack");
  cv->seen[++cv->depth] = self;
  return 0;
}

/* A table whose keys are exactly 1..n (n >= 1) is an array; any other is an object. */
static int build_array(conv *cv, int idx, lua_Unsigned n, ps_val *out) {
  lua_State *L = cv->L;
  ps_arr *a = ps_arr_new((size_t)n);
  lua_Unsigned count = 0;
  if (!a) return fail(cv, "out of memory");
  for (lua_Unsigned i = 1; i <= n; i++) {
    ps_val v;
    cv->key[cv->depth] = NULL;
    cv->len[cv->depth] = (size_t)i;
    if (lua_rawgeti(L, idx, (lua_Integer)i) == LUA_TNIL) {
      lua_pop(L, 1);
      ps_arr_free(a);
      return fail(cv, "sparse array (holes are not encodable)");
    }
    if (build(cv, lua_gettop(L), &v) != 0) {
      lua_pop(L, 1);
      ps_arr_free(a);
      return -1;
    }
    lua_pop(L, 1);
    ps_arr_push(a, v);
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (++count > n) {
      lua_pop(L, 1);
      ps_arr_free(a);
      cv->depth--;
      return fail(cv, "table mixes array items and other keys");
    }
  }
  *out = ps_arr_val(a);
  return 0;
}

typedef int (*put_fn)(conv *cv, void *to, const char *k, size_t kn, ps_val v); /* moves v */

/* Walks an object table: each key must be a UTF-8 string; each value is built and
 * handed to put. On failure, returns -1 with the error recorded. With `lenient`, a
 * key that is not a string returns 1 instead (the table is then no object: the
 * caller takes back what was put and builds the table as a value, which tells an
 * array from a mixed or sparse table). */
static int entries(conv *cv, int idx, put_fn put, void *to, int lenient) {
  lua_State *L = cv->L;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t kn;
    const char *k;
    ps_val v;
    if (lua_type(L, -2) != LUA_TSTRING) {
      if (lenient) {
        lua_pop(L, 2);
        return 1;
      }
      cv->depth--; /* the path of the table, not of the bad key */
      fail_key(cv, lua_gettop(L) - 1);
      lua_pop(L, 2);
      return -1;
    }
    k = lua_tolstring(L, -2, &kn);
    cv->key[cv->depth] = k;
    cv->len[cv->depth] = kn;
    const char *bad = key_problem((const unsigned char *)k, kn);
    if ((bad ? fail(cv, bad) : build(cv, lua_gettop(L), &v)) ||
        put(cv, to, k, kn, v) != 0) {
      lua_pop(L, 2);
      return -1;
    }
    lua_pop(L, 1);
  }
  return 0;
}

static int put_obj(conv *cv, void *to, const char *k, size_t kn, ps_val v) {
  return ps_obj_set(to, k, kn, v) == 0 ? 0 : fail(cv, "out of memory");
}

static int build_object(conv *cv, int idx, ps_val *out) {
  ps_obj *o = ps_obj_new(0);
  if (!o) return fail(cv, "out of memory");
  if (entries(cv, idx, put_obj, o, 0) != 0) {
    ps_obj_free(o);
    return -1;
  }
  *out = ps_obj_val(o);
  return 0;
}

static int build_table(conv *cv, int idx, ps_val *out) {
  lua_Unsigned n = lua_rawlen(cv->L, idx);
  int r;
  if (enter(cv, idx) != 0) return -1;
  r = n > 0 ? build_array(cv, idx, n, out) : build_object(cv, idx, out);
  if (r == 0) cv->depth--;
  return r;
}

static int build(conv *cv, int idx, ps_val *out) {
  lua_State *L = cv->L;
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (!utf8_valid((const unsigned char *)s, len)) return fail(cv, "string is not valid UTF-8");
    *out = ps_str(s, len);
    return 0;
  }
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      *out = ps_int((int64_t)lua_tointeger(L, idx));
    } else {
      lua_Number x = lua_tonumber(L, idx);
      if (isnan(x)) return fail(cv, "cannot encode NaN");
      if (isinf(x)) return fail(cv, "cannot encode an infinite number");
      *out = ps_real(x);
    }
    return 0;
  case LUA_TBOOLEAN:
    *out = ps_bool(lua_toboolean(L, idx));
    return 0;
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) != NULL) break;
    *out = ps_null(); /* wsup.null, cjson.null */
    return 0;
  case LUA_TTABLE:
    return build_table(cv, idx, out);
  default:
    break;
  }
  {
    char reason[64];
    snprintf(reason, sizeof reason, "cannot encode a %s", luaL_typename(L, idx));
    return fail(cv, reason);
  }
}

static int stage_grow(conv *cv) {
  size_t cap = cv->cap ? cv->cap * 2 : STAGE_SMALL;
  ent *e = cv->e == cv->small ? malloc(cap * sizeof *e) : realloc(cv->e, cap * sizeof *e);
  if (!e) return -1;
  if (cv->e == cv->small) memcpy(e, cv->small, cv->n * sizeof *e);
  cv->e = e;
  cv->cap = cap;
  return 0;
}

static inline int stage(conv *cv, const char *mk, size_t mkn, const char *k, size_t kn, ps_val v) {
  if (cv->n == cv->cap && stage_grow(cv) != 0) {
    ps_free(&v);
    return fail(cv, "out of memory");
  }
  cv->e[cv->n++] = (ent){mk, k, mkn, kn, v};
  return 0;
}

static void unstage(conv *cv) {
  for (size_t i = 0; i < cv->n; i++) ps_free(&cv->e[i].v);
  if (cv->e != cv->small) free(cv->e);
}

typedef struct merge_to {
  const char *mk; /* the merge key; borrowed from the patch table */
  size_t mkn;
} merge_to;

static int put_stage(conv *cv, void *to, const char *k, size_t kn, ps_val v) {
  merge_to *m = to;
  return stage(cv, m->mk, m->mkn, k, kn, v);
}

/* The entries of a merge-key object go straight to the stage: O(size of the patch).
 * A table under a merge key that turns out to be an array replaces, like any value. */
static int stage_merge(conv *cv, int idx, const char *mk, size_t mkn) {
  merge_to m = {mk, mkn};
  size_t at = cv->n;
  int r;
  if (enter(cv, idx) != 0 || stage(cv, mk, mkn, NULL, 0, ps_null()) != 0) return -1;
  if ((r = entries(cv, idx, put_stage, &m, 1)) < 0) return -1;
  cv->depth--;
  if (r == 1) {
    ps_val v;
    while (cv->n > at) ps_free(&cv->e[--cv->n].v); /* the slot entry and what entries staged */
    if (build(cv, idx, &v) != 0 || stage(cv, NULL, 0, mk, mkn, v) != 0) return -1;
  }
  return 0;
}

static int stage_patch(conv *cv, int idx, const ps_keys *keys) {
  lua_State *L = cv->L;
  cv->seen[1] = lua_topointer(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t kn;
    const char *k;
    int v = lua_gettop(L);
    ps_val val;
    if (lua_type(L, -2) != LUA_TSTRING) {
      if (lua_isinteger(L, -2)) fail(cv, "expected an object (string keys), got an array item");
      else fail_key(cv, v - 1);
      lua_pop(L, 2);
      return -1;
    }
    k = lua_tolstring(L, -2, &kn);
    cv->depth = 1;
    cv->key[1] = k;
    cv->len[1] = kn;
    const char *bad = key_problem((const unsigned char *)k, kn);
    if (bad) {
      fail(cv, bad);
      lua_pop(L, 2);
      return -1;
    }
    if (lua_type(L, v) == LUA_TTABLE && ps_is_merge_key(keys, k, kn)) {
      if (stage_merge(cv, v, k, kn) != 0) {
        lua_pop(L, 2);
        return -1;
      }
    } else if (build(cv, v, &val) != 0 || stage(cv, NULL, 0, k, kn, val) != 0) {
      lua_pop(L, 2);
      return -1;
    }
    lua_pop(L, 1);
    cv->depth = 0;
  }
  return 0;
}

/* Commits staged entries into pending; the stage is emptied. */
static void commit(conv *cv, ps_obj *pending) {
  ps_obj *slot = NULL;
  const char *slot_key = NULL;
  for (size_t i = 0; i < cv->n; i++) {
    ent *e = &cv->e[i];
    if (!e->mk) {
      ps_obj_set(pending, e->k, e->kn, e->v);
      continue;
    }
    if (e->mk != slot_key) {
      slot = ps_merge_slot(pending, e->mk, e->mkn);
      slot_key = e->mk;
    }
    if (e->k && slot) ps_obj_set(slot, e->k, e->kn, e->v);
    else ps_free(&e->v);
  }
  cv->n = 0;
}

void lc_enqueue(lua_State *L, int idx, upl *u) {
  conv cv;
  int had;
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE) {
    luaL_error(L, "patch: expected a table, got %s", luaL_typename(L, idx));
    return;
  }
  cv.L = L;
  cv.depth = 0;
  cv.e = cv.small;
  cv.n = 0;
  cv.cap = STAGE_SMALL;
  if (stage_patch(&cv, idx, u->keys) != 0) {
    unstage(&cv);
    lua_pushstring(L, cv.err);
    lua_error(L);
    return;
  }
  had = u->pending != NULL;
  commit(&cv, upl_pending_obj(u));
  unstage(&cv);
  upl_commit(u, had);
}

void lc_push_ps(lua_State *L, const ps_val *v) {
  luaL_checkstack(L, 3, "JSON too deep");
  switch (ps_typeof(v)) {
  case PS_OBJ: {
    const ps_obj *o = ps_obj_of(v);
    size_t it = 0, kn;
    const char *k;
    const ps_val *x;
    lua_createtable(L, 0, (int)ps_obj_size(o));
    while (ps_obj_next(o, &it, &k, &kn, &x)) {
      lua_pushlstring(L, k, kn);
      lc_push_ps(L, x);
      lua_rawset(L, -3);
    }
    return;
  }
  case PS_ARR: {
    const ps_arr *a = ps_arr_of(v);
    size_t n = ps_arr_len(a);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
      lc_push_ps(L, ps_arr_at(a, i));
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return;
  }
  case PS_STR: {
    size_t n;
    const char *s = ps_str_of(v, &n);
    lua_pushlstring(L, s, n);
    return;
  }
  case PS_INT:
    lua_pushinteger(L, (lua_Integer)ps_int_of(v));
    return;
  case PS_REAL:
    lua_pushnumber(L, ps_real_of(v));
    return;
  case PS_TRUE:
  case PS_FALSE:
    lua_pushboolean(L, ps_typeof(v) == PS_TRUE);
    return;
  case PS_NULL:
    lua_pushlightuserdata(L, NULL);
    return;
  }
}

static int push_p(lua_State *L) {
  lc_push_ps(L, lua_touserdata(L, 1));
  return 1;
}

void lc_push_obj(lua_State *L, const ps_obj *o) {
  ps_val v = ps_obj_val((ps_obj *)o);
  lc_push_ps(L, &v);
}

/* Building the tables allocates, an allocation may run a collection step, and a finalizer
 * may then close or feed the uploader and free or grow what is being walked: so this walks
 * a private copy (under pcall, to free it even when the push runs out of memory). Holding
 * the collector instead cost a collection step per call once it was restarted. */
void lc_push_obj_copy(lua_State *L, const ps_obj *o) {
  ps_val v = ps_obj_val((ps_obj *)o), copy;
  int st;
  if (ps_copy(&copy, &v) != 0) luaL_error(L, "out of memory");
  lua_pushcfunction(L, push_p);
  lua_pushlightuserdata(L, &copy);
  st = lua_pcall(L, 1, 1, 0);
  ps_free(&copy);
  if (st != LUA_OK) lua_error(L);
}

/* Through the store: one conversion to Lua for both kinds of value. Used for the
 * receiver's state, which is not on a hot path. */
void lc_push(lua_State *L, const json_t *v) {
  ps_val x;
  if (ps_from_json(v, &x) != 0) {
    luaL_error(L, "out of memory");
    return;
  }
  lc_push_ps(L, &x); /* may raise only on memory: then x leaks, as the state would */
  ps_free(&x);
}
