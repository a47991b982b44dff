/* luploader.c: the uploader as Lua userdata. The core (uploader.c) owns coalescing,
 * retry and timing; this file turns Lua options into it, runs `send` as a task and
 * maps its results back.
 *
 * The send and on_error functions are held in the userdata's user values rather than
 * in the registry: a send closure that mentions its own uploader then forms a cycle
 * the collector can still reclaim. While the uploader has work (pending, in flight or
 * in backoff) it is anchored in the registry, so dropping the last reference never
 * loses state; once idle or closed it is collectable again. */
#include <locale.h>
#include <stdio.h>
#include <string.h>

#include "lupload.h"

static lw_up *checkup(lua_State *L) { return luaL_checkudata(L, 1, UP_MT); }

static void anchor(lw_up *w, lua_State *L, int idx) {
  if (w->anchor != LUA_NOREF) return;
  lua_pushvalue(L, idx);
  w->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
}

static int push_bool(lua_State *co, void *ud) {
  lua_pushboolean(co, *(int *)ud);
  return 1;
}

static int flushed(const lw_up *w) { return upl_idle(&w->u) && !w->u.lost; }

/* ops->settled: nothing pending or in flight (or closed): wake flushers, unanchor. */
static void settled(upl *u) {
  lw_up *w = (lw_up *)u;
  if (u->phase == UPL_SENDING) return;
  while (w->waiters) {
    lw_task *t = w->waiters;
    w->waiters = t->next_waiter;
    t->next_waiter = NULL;
    wl_timer_stop(&w->c->loop, &t->timer); /* the flush timeout must not fire now */
    t->flushed = flushed(w);
    lw_wake(t, push_bool, &t->flushed);
  }
  if (w->anchor != LUA_NOREF) {
    luaL_unref(w->c->main, LUA_REGISTRYINDEX, w->anchor);
    w->anchor = LUA_NOREF;
  }
}

void lw_up_push_uv(lw_up *w, lua_State *L, int i) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->anchor);
  lua_getiuservalue(L, -1, i);
  lua_remove(L, -2);
}

void lw_up_report(lw_up *w, lua_State *L) {
  /* the message, with a traceback, is on top of L */
  lw_up_push_uv(w, L, UV_ONERROR);
  if (lua_isfunction(L, -1)) {
    lua_insert(L, -2);
    if (lw_pcall(L, 1, 1) != LUA_OK) lw_report(L, "on_error handler failed");
    else lua_pop(L, 1);
  } else {
    lua_pop(L, 1);
    lw_log(w->c, 0, lw_up_name(w), "send error: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

/* Completes an attempt and logs what operators want to see: the first failure
 * (warn), each retry (debug), a drop (warn) and the recovery (info). */
void lw_up_done(lw_up *w, upl_result r, int64_t retry_after_ms, const char *err) {
  unsigned before = w->u.st.consecutive_failures;
  upl_done(&w->u, r, retry_after_ms, err);
  if (w->u.phase == UPL_BACKOFF)
    lw_log(w->c, w->u.st.consecutive_failures == 1 ? 1 : 3, lw_up_name(w), "attempt failed: %s; retry in %lld ms",
           w->u.last_error ? w->u.last_error : "send failed", (long long)(upl_next_attempt(&w->u) - wl_now(&w->c->loop)));
  else if (r == UPL_DROP)
    lw_log(w->c, 1, lw_up_name(w), "%s", w->u.last_error ? w->u.last_error : "dropped");
  else if (r == UPL_OK && before > 0)
    lw_log(w->c, 2, lw_up_name(w), "delivered after %u failed attempts", before);
}

/* The first line of an error message (upl keeps at most 255 bytes of it, cut between
 * UTF-8 characters: dst should be larger, so that the cut happens there). */
static void first_line(char *dst, size_t n, const char *msg) {
  size_t len = strcspn(msg, "\n");
  snprintf(dst, n, "%.*s", (int)len, msg);
}

static void send_done(lw_task *t, lua_State *L, int st, int nres, void *ud) {
  lw_up *w = ud;
  char err[1024];
  int base = lua_gettop(L) - nres + 1;
  (void)t;
  w->c->send_tasks--;
  if (st != LUA_OK) {
    first_line(err, sizeof err, lua_tostring(L, -1));
    if (w->anchor != LUA_NOREF) lw_up_report(w, L);
    else lua_pop(L, 1);
    lw_up_done(w, UPL_RETRY, 0, err);
    return;
  }
  if (nres >= 1 && lua_isboolean(L, base) && lua_toboolean(L, base)) {
    lw_up_done(w, UPL_OK, 0, NULL);
  } else if (nres >= 1 && lua_type(L, base) == LUA_TSTRING && strcmp(lua_tostring(L, base), "drop") == 0) {
    lw_up_done(w, UPL_DROP, 0, "dropped by send");
  } else if (nres == 0 || lua_isnil(L, base) || (lua_isboolean(L, base) && !lua_toboolean(L, base))) {
    lua_Number ra = nres >= 2 ? lua_tonumber(L, base + 1) : 0;
    lw_up_done(w, UPL_RETRY, ra > 0 ? (ra > (lua_Number)LW_MS_MAX ? LW_MS_MAX : (int64_t)ra) : 0, "send returned false");
  } else {
    lua_pushfstring(L, "send returned %s; expected true, false, nil or \"drop\"", luaL_typename(L, base));
    luaL_traceback(L, L, lua_tostring(L, -1), 0);
    lua_remove(L, -2);
    first_line(err, sizeof err, lua_tostring(L, -1));
    lw_up_report(w, L);
    lw_up_done(w, UPL_RETRY, 0, err);
  }
  lua_settop(L, base - 1);
}

/* ops->send: run the send function as a task with (patch, json). */
static void send_start(upl *u) {
  lw_up *w = (lw_up *)u;
  lua_State *L = lw_driver(w->c);
  luaL_checkstack(L, 4, "send");
  lw_up_push_uv(w, L, UV_SEND);
  lc_push_obj(L, u->payload); /* safe: close() during a send keeps the payload, enqueue only touches pending */
  lua_pushlstring(L, u->body, u->body_len);
  w->c->send_tasks++;
  lw_spawn(w->c, L, 2, send_done, w);
}

static const upl_ops ops = {send_start, settled};
static const upl_ops http_ops = {lw_uphttp_send, settled};

/* Options: a bad one raises an error that names it. */
int64_t lw_up_opt_ms(lua_State *L, const char *name, int64_t def) {
  lua_Number v = 0;
  int t = lua_getfield(L, 1, name);
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return def;
  }
  if (t != LUA_TNUMBER || (v = lua_tonumber(L, -1)) < 0 || v != v)
    luaL_error(L, "wsup.uploader: option '%s' must be a non-negative number of ms", name);
  lua_pop(L, 1);
  if (v > 0 && v < 1) return 1; /* not 0, which means "no limit" for the HTTP timeouts */
  return v > (lua_Number)LW_MS_MAX ? LW_MS_MAX : (int64_t)v;
}

static const char *const any_opts[] = {"send", "base_delay_ms", "max_delay_ms", "jitter_ms", "merge_keys",
                                       "name", "on_error", "url", NULL};
/* Read by luphttp.c; with a send policy they would be silently ignored. */
static const char *const http_opts[] = {"headers", "timeout_ms", "connect_timeout_ms", "insecure", "ca_file",
                                        "classify", "max_retry_after_ms", NULL};

static int listed(const char *const *list, const char *name) {
  while (*list && strcmp(*list, name) != 0) list++;
  return *list != NULL;
}

static void check_opt_names(lua_State *L) {
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "wsup.uploader: option names must be strings");
    if (!listed(any_opts, lua_tostring(L, -2)) && !listed(http_opts, lua_tostring(L, -2)))
      luaL_error(L, "wsup.uploader: unknown option '%s'", lua_tostring(L, -2));
    lua_pop(L, 1);
  }
}

/* The merge_keys option, looked up once and left on the stack (so that an __index
 * cannot answer differently later), and checked before anything is allocated. Its
 * length, or -1 when absent (the shared defaults). */
static lua_Integer check_keys(lua_State *L) {
  lua_Integer n = -1;
  if (lua_getfield(L, 1, "merge_keys") != LUA_TNIL) {
    if (!lua_istable(L, -1)) luaL_error(L, "wsup.uploader: option 'merge_keys' must be a list of strings");
    n = (lua_Integer)lua_rawlen(L, -1);
    if (n > PS_MAX_KEYS) luaL_error(L, "wsup.uploader: option 'merge_keys' has more than %d keys", PS_MAX_KEYS);
    for (lua_Integer i = 1; i <= n; i++) {
      if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
        luaL_error(L, "wsup.uploader: option 'merge_keys' must be a list of strings");
      lua_pop(L, 1);
    }
    lua_pushnil(L); /* nothing but 1..n: a set ({k = true}) would otherwise read as "no merge keys" */
    while (lua_next(L, -2)) {
      if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1 || lua_tointeger(L, -2) > n)
        luaL_error(L, "wsup.uploader: option 'merge_keys' must be a list of strings");
      lua_pop(L, 1);
    }
  }
  return n;
}

/* Copies the n checked keys of the list at idx into k. A finalizer run by the GC in
 * between may have changed the list, so each item is checked again. 0; -1 when an
 * item is no longer a string; -2 out of memory (k is emptied on failure). */
static int copy_keys(lua_State *L, int idx, lua_Integer n, ps_keys *k) {
  int rc = 0;
  for (lua_Integer i = 1; i <= n && rc == 0; i++) {
    size_t len;
    const char *key;
    if (lua_rawgeti(L, idx, i) != LUA_TSTRING) {
      rc = -1;
    } else {
      key = lua_tolstring(L, -1, &len); /* before len is read */
      rc = ps_keys_add(k, key, len) == 0 ? 0 : -2;
    }
    lua_pop(L, 1);
  }
  if (rc != 0) ps_keys_free(k);
  return rc;
}

static int l_uploader(lua_State *L) {
  lw_ctx *c = lua_touserdata(L, lua_upvalueindex(1));
  int64_t base, max, jitter;
  ps_keys keys = {0};
  lua_Integer nkeys;
  int is_http, keys_at, rc;
  lw_up *w;
  luaL_checktype(L, 1, LUA_TTABLE);
  check_opt_names(L);
  lua_getfield(L, 1, "url");
  is_http = !lua_isnil(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, 1, "send");
  if (is_http && !lua_isnil(L, -1))
    return luaL_error(L, "wsup.uploader: options 'url' and 'send' exclude each other");
  if (!is_http && !lua_isfunction(L, -1))
    return luaL_error(L, "wsup.uploader: option 'send' must be a function (or give 'url')");
  for (int i = 0; !is_http && http_opts[i]; i++) {
    if (lua_getfield(L, 1, http_opts[i]) != LUA_TNIL)
      return luaL_error(L, "wsup.uploader: option '%s' is for the HTTP sender: give 'url', not 'send'", http_opts[i]);
    lua_pop(L, 1);
  }
  if (lua_getfield(L, 1, "on_error") != LUA_TNIL && !lua_isfunction(L, -1))
    return luaL_error(L, "wsup.uploader: option 'on_error' must be a function");
  base = lw_up_opt_ms(L, "base_delay_ms", 500);
  max = lw_up_opt_ms(L, "max_delay_ms", 30000);
  jitter = lw_up_opt_ms(L, "jitter_ms", 500);
  nkeys = check_keys(L);
  keys_at = lua_gettop(L); /* the list, or nil */
  if (lua_getfield(L, 1, "name") != LUA_TNIL && lua_type(L, -1) != LUA_TSTRING)
    return luaL_error(L, "wsup.uploader: option 'name' must be a string");
  /* Userdata first, so an error while filling it leaks nothing: __gc frees. */
  w = lua_newuserdatauv(L, sizeof *w, 4);
  memset(w, 0, sizeof *w);
  w->anchor = LUA_NOREF;
  luaL_setmetatable(L, UP_MT);
  if (nkeys >= 0 && (rc = copy_keys(L, keys_at, nkeys, &keys)) != 0)
    return luaL_error(L, rc == -1 ? "wsup.uploader: option 'merge_keys' must be a list of strings"
                                  : "wsup.uploader: out of memory");
  w->c = c;
  upl_init(&w->u, &c->loop, &ops, w, nkeys >= 0 ? &keys : NULL);
  if (lua_type(L, -2) == LUA_TSTRING && !(w->name = strdup(lua_tostring(L, -2))))
    return luaL_error(L, "wsup.uploader: out of memory");
  w->next = c->ups;
  if (w->next) w->next->prev = w;
  c->ups = w;
  if (is_http) {
    w->u.ops = &http_ops;
    lw_uphttp_init(L, w);
  }
  w->u.base_ms = base;
  w->u.max_ms = max;
  w->u.jitter_ms = jitter;
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, UV_SEND);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, -2, UV_ONERROR);
  return 1;
}

/* The hot path: the metatable is an upvalue, which spares luaL_checkudata's
 * registry lookup by name on every enqueue. */
static lw_up *checkup_fast(lua_State *L) {
  void *p = lua_touserdata(L, 1);
  if (p && lua_getmetatable(L, 1)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (same) return p;
  }
  luaL_typeerror(L, 1, UP_MT);
  return NULL;
}

static int up_enqueue(lua_State *L) {
  lw_up *w = checkup_fast(L);
  if (w->u.closed) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lc_enqueue(L, 2, &w->u);
  anchor(w, L, 1);
  lua_pushboolean(L, 1);
  return 1;
}

static int json_depth(const json_t *j) {
  int d = 0, x;
  const char *k;
  json_t *v;
  size_t i;
  if (json_is_object(j)) {
    json_object_foreach((json_t *)j, k, v) if ((x = json_depth(v)) > d) d = x;
    return d + 1;
  }
  if (json_is_array(j)) {
    json_array_foreach(j, i, v) if ((x = json_depth(v)) > d) d = x;
    return d + 1;
  }
  return 0;
}

/* jansson converts numbers with LC_NUMERIC and asserts when its decimal point is not one
 * byte (ps_AF's is two): under any locale but "." the text is parsed in the C locale. */
static json_t *load_json(const char *s, size_t n, json_error_t *e) {
  const char *dp = localeconv()->decimal_point;
  locale_t c = strcmp(dp, ".") == 0 ? (locale_t)0 : newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
  locale_t old = c ? uselocale(c) : (locale_t)0;
  json_t *j = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, e);
  if (c) {
    uselocale(old);
    freelocale(c);
  }
  return j;
}

/* up:enqueue_json(text): for JSON that comes from outside (stdin, files). Numbers
 * are parsed by jansson, so integers stay exact. Bad text is an outside-world
 * failure: nil, message; pending is untouched. */
static int up_enqueue_json(lua_State *L) {
  lw_up *w = checkup(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  json_error_t e;
  json_t *j;
  ps_val v;
  if (w->u.closed) {
    lua_pushboolean(L, 0);
    return 1;
  }
  /* Any JSON value (so a valid non-object is named as such), NUL in strings as a table's may hold. */
  if (!(j = load_json(s, n, &e))) {
    lua_pushnil(L);
    lua_pushfstring(L, "invalid JSON: %s at column %d", e.text, e.column);
    return 2;
  }
  if (!json_is_object(j) || json_depth(j) > LW_MAXDEPTH) {
    lua_pushnil(L);
    lua_pushstring(L, json_is_object(j) ? "nesting deeper than the limit" : "not a JSON object");
    json_decref(j);
    return 2;
  }
  if (ps_from_json(j, &v) != 0) {
    json_decref(j);
    return luaL_error(L, "enqueue_json: out of memory");
  }
  json_decref(j);
  upl_enqueue(&w->u, ps_obj_of(&v));
  anchor(w, L, 1);
  lua_pushboolean(L, 1);
  return 1;
}

static int up_close(lua_State *L) {
  lw_up *w = checkup(L);
  if (w->c->open) upl_close(&w->u);
  return 0;
}

static int quiet(void *ud) { return upl_idle(&((lw_up *)ud)->u); }

static void flush_timeout(void *ud) {
  lw_task *t = ud;
  lw_up *w = t->waiting_on;
  lw_task **p = &w->waiters;
  while (*p && *p != t) p = &(*p)->next_waiter;
  if (!*p) return;
  *p = t->next_waiter;
  t->next_waiter = NULL;
  t->flushed = 0;
  lw_wake(t, push_bool, &t->flushed);
}

static int up_flush(lua_State *L) {
  lw_up *w = checkup(L);
  int64_t deadline = -1;
  lw_task *t;
  if (!lua_isnoneornil(L, 2)) deadline = wl_now(&w->c->loop) + lw_checkms(L, 2);
  if (upl_idle(&w->u)) {
    lua_pushboolean(L, !w->u.lost);
    return 1;
  }
  if ((t = lw_waiter(w->c, L, "flush")) != NULL) {
    if (t->done == send_done && t->done_ud == w)
      return luaL_error(L, "flush: called from this uploader's own send, which would wait for itself");
    t->next_waiter = w->waiters;
    w->waiters = t;
    t->waiting_on = w;
    if (deadline >= 0) wl_timer_start(&w->c->loop, &t->timer, deadline - wl_now(&w->c->loop), flush_timeout, t);
    return lw_wait(L);
  }
  lw_drive(w->c, L, deadline, quiet, w);
  lua_pushboolean(L, flushed(w));
  return 1;
}

static int up_pending(lua_State *L) {
  lw_up *w = checkup(L);
  if (w->u.pending) lc_push_obj_copy(L, w->u.pending);
  else lua_pushnil(L);
  return 1;
}

static void setint(lua_State *L, const char *k, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

static void setbool(lua_State *L, const char *k, int v) {
  lua_pushboolean(L, v);
  lua_setfield(L, -2, k);
}

static int up_stats(lua_State *L) {
  lw_up *w = checkup(L);
  const upl_stats *s = &w->u.st;
  lua_createtable(L, 0, 16);
  setint(L, "enqueued", s->enqueued);
  setint(L, "coalesced", s->coalesced);
  setint(L, "absorbed", s->absorbed);
  setint(L, "attempts", s->attempts);
  setint(L, "delivered", s->delivered);
  setint(L, "failures", s->failures);
  setint(L, "dropped", s->dropped);
  setint(L, "consecutive_failures", s->consecutive_failures);
  setint(L, "bytes_sent", s->bytes_sent);
  setbool(L, "inflight", w->u.phase == UPL_SENDING);
  setbool(L, "pending", w->u.pending != NULL);
  setbool(L, "closed", w->u.closed);
  if (w->last_status) setint(L, "last_status", (uint64_t)w->last_status);
  int64_t next = upl_next_attempt(&w->u);
  if (next >= 0) setint(L, "next_attempt_at", (uint64_t)next);
  if (w->u.last_error) {
    lua_pushstring(L, w->u.last_error);
    lua_setfield(L, -2, "last_error");
  }
  return 1;
}

static const char *phase_name(const lw_up *w) {
  static const char *const names[] = {"idle", "queued", "sending", "backoff"};
  return w->u.closed ? "closed" : names[w->u.phase];
}

static int up_tostring(lua_State *L) {
  lw_up *w = checkup(L);
  lua_pushfstring(L, "wsup.uploader \"%s\" (%s)", lw_up_name(w), phase_name(w));
  return 1;
}

#define LW_WHY_MAX 1024 /* a composed reason; lw_log keeps no more of a message anyway */

/* Why w's state is undelivered (written into buf when it is composed), or NULL when it has
 * none. When a second signal cut the run short, an open uploader's reason says so, with
 * the error it was retrying, if any. */
static const char *undelivered_why(const lw_up *w, char *buf, size_t n) {
  const char *err = w->u.last_error && w->u.st.consecutive_failures ? w->u.last_error : NULL; /* not an old, recovered one */
  if (upl_idle(&w->u) && !w->u.lost) return NULL;
  if (w->c->interrupted && !w->u.closed) {
    if (!err) return "interrupted by a second signal";
    snprintf(buf, n, "interrupted by a second signal (last error: %s)", err);
    return buf;
  }
  if (err) return err;
  if (w->u.closed) return w->u.phase == UPL_SENDING ? "closed during a send" : "closed before it was delivered";
  return "not delivered before the drain deadline";
}

/* Keeps a collected uploader's undelivered state for the final report (see lw_ctx.gone). */
static void remember_gone(lw_ctx *c, const lw_up *w) {
  char buf[LW_WHY_MAX];
  const char *why = undelivered_why(w, buf, sizeof buf), *name = lw_up_name(w);
  size_t n;
  char *p;
  if (!why || c->reported) return;
  n = strlen(name) + 1 + strlen(why) + 1;
  if (c->gone_n == LW_GONE_MAX || !(p = realloc(c->gone, c->gone_len + n))) {
    c->gone_more++;
    return;
  }
  c->gone = p;
  memcpy(p + c->gone_len, name, strlen(name) + 1);
  memcpy(p + c->gone_len + strlen(name) + 1, why, strlen(why) + 1);
  c->gone_len += n;
  c->gone_n++;
}

static int up_gc(lua_State *L) {
  lw_up *w = checkup(L);
  if (w->c && w->c->open) {                 /* w->c is set just before upl_init */
    remember_gone(w->c, w);
    upl_free(&w->u);
  } else if (w->c) {
    upl_release(&w->u);                     /* finalized after its context: the loop is gone */
  }
  free(w->name);
  w->name = NULL;
  lw_uphttp_free(w);
  if (w->c) {
    if (w->prev) w->prev->next = w->next;
    else if (w->c->ups == w) w->c->ups = w->next;
    if (w->next) w->next->prev = w->prev;
    w->prev = w->next = NULL;
  }
  return 0;
}

/* Closed uploaders are done: a send still in flight after close is not waited for. */
int lw_uploaders_idle(lw_ctx *c) {
  for (lw_up *w = c->ups; w; w = w->next)
    if (!w->u.closed && !upl_idle(&w->u)) return 0;
  return 1;
}

int lw_report_undelivered(lw_ctx *c) {
  int n = 0;
  for (size_t at = 0; at < c->gone_len; n++) { /* collected ones first: they went first */
    const char *p = c->gone + at;
    const char *why = p + strlen(p) + 1;
    lw_log(c, 0, p, "undelivered: %s", why);
    at = (size_t)(why - c->gone) + strlen(why) + 1;
  }
  if (c->gone_more) lw_log(c, 0, "wsup", "%u more uploaders were collected with state undelivered", c->gone_more);
  n += (int)c->gone_more;
  for (lw_up *w = c->ups; w; w = w->next) {
    char buf[LW_WHY_MAX];
    const char *why = undelivered_why(w, buf, sizeof buf);
    if (!why) continue;
    lw_log(c, 0, lw_up_name(w), "undelivered: %s", why);
    n++;
  }
  c->reported = 1;
  return n;
}

void lw_open_uploader(lua_State *L) {
  static const luaL_Reg meth[] = {{"enqueue", up_enqueue}, {"enqueue_json", up_enqueue_json}, {"close", up_close}, {"flush", up_flush},
                                  {"pending", up_pending}, {"stats", up_stats}, {"__close", up_close},
                                  {"__gc", up_gc}, {"__tostring", up_tostring}, {NULL, NULL}};
  static const luaL_Reg f[] = {{"uploader", l_uploader}, {NULL, NULL}};
  lw_open_class(L, UP_MT, meth, f);
}
