/* luphttp.c: the built-in HTTP sender of an uploader: PUT the payload as JSON on the
 * shared libcurl client. No Lua runs per attempt unless the user gave a headers
 * function or a classify function; those run from the loop, never from libcurl. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lupload.h"

#define MAX_HEADERS 64
#define CT_JSON "Content-Type: application/json"

struct lw_uphttp {
  char *url;                 /* owned */
  char *lines[MAX_HEADERS];  /* owned "Name: value" lines of a headers table */
  int n;
  int headers_fn, classify_fn; /* the functions live in user values */
  long timeout_ms, connect_timeout_ms;
  int insecure;
  char *ca_file;             /* owned; NULL: the system's CAs */
  int64_t max_retry_after_ms;
  int shard;                 /* claimed connection cache (http_claim) of the shared client; -1: none yet */
  http_xfer *x;              /* the attempt in flight */
  wl_job finish;             /* completion, run from the loop */
  lw_hres res;               /* owned copies of the last response */
};

/* Raises if the string option on the top holds a NUL byte, where C would cut it. */
static void check_nul(lua_State *L, const char *opt) {
  size_t n;
  if (strlen(lua_tolstring(L, -1, &n)) != n) luaL_error(L, "wsup.uploader: option '%s' contains a NUL byte", opt);
}

void lw_uphttp_init(lua_State *L, lw_up *w) {
  lw_uphttp *h;
  const char *lines[MAX_HEADERS];
  int n = 0, ud = lua_gettop(L);
  if (lua_getfield(L, 1, "url") != LUA_TSTRING) luaL_error(L, "wsup.uploader: option 'url' must be a string");
  check_nul(L, "url");
  if (!http_url_chars_ok(lua_tostring(L, -1))) /* every attempt would be refused */
    luaL_error(L, "wsup.uploader: option 'url' contains whitespace or a control character");
  if (strncmp(lua_tostring(L, -1), "http://", 7) != 0 && strncmp(lua_tostring(L, -1), "https://", 8) != 0)
    luaL_error(L, "wsup.uploader: option 'url' must start with http:// or https://");
  if (!(h = w->http = calloc(1, sizeof *h))) luaL_error(L, "wsup.uploader: out of memory");
  h->shard = -1;                       /* before anything can raise: lw_uphttp_free releases a shard >= 0 */
  if (!(h->url = strdup(lua_tostring(L, -1)))) luaL_error(L, "wsup.uploader: out of memory");
  if (!w->name) {
    char name[256];
    lw_redact_url(name, sizeof name, h->url);
    if (!(w->name = strdup(name))) luaL_error(L, "wsup.uploader: out of memory");
  }
  lua_pop(L, 1);
  h->timeout_ms = lw_up_opt_ms(L, "timeout_ms", 10000);
  h->connect_timeout_ms = lw_up_opt_ms(L, "connect_timeout_ms", 5000);
  h->max_retry_after_ms = lw_up_opt_ms(L, "max_retry_after_ms", 600000);
  lua_getfield(L, 1, "insecure");
  if (!lua_isnil(L, -1) && !lua_isboolean(L, -1)) luaL_error(L, "wsup.uploader: option 'insecure' must be a boolean");
  h->insecure = lua_toboolean(L, -1);
  lua_pop(L, 1);
  switch (lua_getfield(L, 1, "ca_file")) {
  case LUA_TNIL: break;
  case LUA_TSTRING:
    check_nul(L, "ca_file");
    if (!(h->ca_file = strdup(lua_tostring(L, -1)))) luaL_error(L, "wsup.uploader: out of memory");
    break;
  default: luaL_error(L, "wsup.uploader: option 'ca_file' must be a string");
  }
  lua_pop(L, 1);
  switch (lua_getfield(L, 1, "headers")) {
  case LUA_TNIL: break;
  case LUA_TFUNCTION:
    h->headers_fn = 1;
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, ud, UV_HEADERS);
    break;
  case LUA_TTABLE:
    n = lw_header_lines(L, -1, lines, MAX_HEADERS - 1, "wsup.uploader: option 'headers'");
    for (int i = 0; i < n; i++) h->lines[h->n++] = strdup(lines[i]);
    lua_pop(L, n);
    break;
  default:
    luaL_error(L, "wsup.uploader: option 'headers' must be a table or a function");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "classify") != LUA_TNIL) {
    if (!lua_isfunction(L, -1)) luaL_error(L, "wsup.uploader: option 'classify' must be a function");
    h->classify_fn = 1;
    lua_setiuservalue(L, ud, UV_CLASSIFY);
  } else {
    lua_pop(L, 1);
  }
}

void lw_uphttp_free(lw_up *w) {
  lw_uphttp *h = w->http;
  if (!h) return;
  if (h->x && w->c && w->c->open) http_cancel(h->x);
  if (w->c && w->c->open) wl_cancel(&w->c->loop, &h->finish);
  if (w->c && w->c->open) http_release(w->c->http, h->shard);
  for (int i = 0; i < h->n; i++) free(h->lines[i]);
  lw_hres_clear(&h->res);
  free(h->ca_file);
  free(h->url);
  free(h);
  w->http = NULL;
}

static int64_t hint_ms(lw_up *w, const lw_hres *r) {
  const char *v;
  int64_t ms;
  if (r->err || (r->status != 429 && r->status != 503)) return 0;
  if (!(v = lw_hres_header(r, "retry-after")) || (ms = http_retry_after_ms(v, time(NULL))) < 0) return 0;
  return ms > w->http->max_retry_after_ms ? w->http->max_retry_after_ms : ms;
}

static upl_result default_class(const lw_hres *r) {
  long s = r->status;
  if (r->err) return UPL_RETRY;
  if (s >= 200 && s < 300) return UPL_OK;
  if (s >= 400 && s < 500 && s != 408 && s != 425 && s != 429) return UPL_DROP;
  return UPL_RETRY;
}

/* Runs classify(res) under pcall; returns -1 (and reports) when it fails. */
static int run_classify(lw_up *w, lua_State *L, upl_result *out, int64_t *hint) {
  static const char *const names[] = {"ok", "retry", "drop", NULL};
  static const upl_result map[] = {UPL_OK, UPL_RETRY, UPL_DROP};
  int i = 0;
  luaL_checkstack(L, 4, "classify");
  lw_up_push_uv(w, L, UV_CLASSIFY);
  lw_hres_push(L, &w->http->res);
  if (lw_pcall(L, 1, 2) != LUA_OK) {
    lw_up_report(w, L);
    return -1;
  }
  while (lua_type(L, -2) == LUA_TSTRING && names[i] && strcmp(names[i], lua_tostring(L, -2)) != 0) i++;
  if (lua_type(L, -2) != LUA_TSTRING || !names[i]) {
    lua_pop(L, 2);
    lua_pushstring(L, "classify must return \"ok\", \"retry\" or \"drop\"");
    lw_up_report(w, L);
    return -1;
  }
  if (lua_isnumber(L, -1) && lua_tonumber(L, -1) > 0) {
    lua_Number ms = lua_tonumber(L, -1);
    *hint = ms > (lua_Number)w->http->max_retry_after_ms ? w->http->max_retry_after_ms : (int64_t)ms;
  }
  lua_pop(L, 2);
  *out = map[i];
  return 0;
}

static void finish_cb(void *ud) {
  lw_up *w = ud;
  lw_uphttp *h = w->http;
  lw_hres *r = &h->res;
  upl_result res = default_class(r);
  int64_t hint = hint_ms(w, r);
  char err[300];
  w->last_status = r->err ? 0 : r->status;
  if (h->classify_fn && run_classify(w, lw_driver(w->c), &res, &hint) != 0) res = UPL_RETRY;
  if (r->err) snprintf(err, sizeof err, "%s (%s)", lw_hres_error(r), lw_http_code(r->err));
  else if (res == UPL_DROP) snprintf(err, sizeof err, "HTTP %ld: dropped, not retried", r->status);
  else snprintf(err, sizeof err, "HTTP %ld", r->status);
  lw_hres_clear(r);
  lw_up_done(w, res, hint, res == UPL_OK ? NULL : err);
}

static void on_done(void *ud, const http_res *r) {
  lw_up *w = ud;
  w->http->x = NULL;
  lw_hres_copy(&w->http->res, r);
  wl_defer(&w->c->loop, &w->http->finish, finish_cb, w);
}

static void fail_now(lw_up *w, const char *msg) { lw_up_done(w, UPL_RETRY, 0, msg); }

/* Protected: calls headers function 1 and returns its "Name: value" lines (at most
 * integer 2 of them), or raises saying what is wrong with its result. */
static int headers_call(lua_State *L) {
  const char *lines[MAX_HEADERS];
  int max = (int)lua_tointeger(L, 2);
  lua_settop(L, 1);
  lua_call(L, 0, 1);
  if (!lua_istable(L, -1)) return luaL_error(L, "headers function must return a table, not %s", luaL_typename(L, -1));
  return lw_header_lines(L, -1, lines, max, "headers function"); /* the lines are the top values */
}

void lw_uphttp_send(upl *u) {
  lw_up *w = (lw_up *)u;
  lw_uphttp *h = w->http;
  lua_State *L = lw_driver(w->c);
  const char *lines[MAX_HEADERS];
  char err[256] = "";
  int n = 0, top = lua_gettop(L);
  http_req r = {0};
  if (w->c->loop.virt) return fail_now(w, "HTTP needs the real clock, and wsup.clock() is \"virtual\"");
  char why[256], msg[300];
  if (!lw_http(w->c, why, sizeof why)) {
    snprintf(msg, sizeof msg, "cannot start the HTTP client: %s", why);
    return fail_now(w, msg);
  }
  if (h->shard < 0) h->shard = http_claim(w->c->http); /* -1 (OOM): the shared shard 0 */
  for (int i = 0; i < h->n; i++) lines[n++] = h->lines[i];
  if (h->headers_fn) {
    /* Called on each attempt so a token can be refreshed; checked under the same pcall,
     * since an unusable table must be reported and retried, never raised into the loop. */
    luaL_checkstack(L, MAX_HEADERS + 8, "headers");
    lua_pushcfunction(L, headers_call);
    lw_up_push_uv(w, L, UV_HEADERS);
    lua_pushinteger(L, MAX_HEADERS - n - 1); /* room for the JSON content type */
    if (lw_pcall(L, 2, LUA_MULTRET) != LUA_OK) {
      lw_up_report(w, L);
      lua_settop(L, top);
      return fail_now(w, "headers function failed");
    }
    for (int i = top + 1; i <= lua_gettop(L); i++) lines[n++] = lua_tostring(L, i);
  }
  int ctype = 0;                       /* the caller's Content-Type replaces ours, never joins it */
  for (int i = 0; i < n && !ctype; i++) ctype = http_header_is(lines[i], "Content-Type");
  if (!ctype) lines[n++] = CT_JSON;
  r.method = "PUT";
  r.url = h->url;
  r.headers = lines;
  r.n_headers = (size_t)n;
  r.body = u->body;
  r.body_len = u->body_len;
  r.timeout_ms = h->timeout_ms;
  r.connect_timeout_ms = h->connect_timeout_ms;
  r.insecure = h->insecure;
  r.ca_file = h->ca_file;
  r.shard = h->shard < 0 ? 0 : h->shard;
  r.truncate_body = 1; /* the status decides; a long answer (a receiver echoing a big state) is no failure */
  h->x = http_start(w->c->http, &r, on_done, w, err, sizeof err);
  lua_settop(L, top);
  if (!h->x) fail_now(w, err);
}

