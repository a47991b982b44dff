/* lhttp.c: wsup.http.request for Lua send policies. The transfer runs on the shared
 * client (http.c); its done callback, which runs inside libuv/libcurl frames, only
 * copies the result into C memory and queues a wake-up, so Lua runs from the loop. */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "lwsup.h"

#define HRES_MT "wsup.http.result"
#define MAX_HEADERS 64


http_client *lw_http(lw_ctx *c, char *err, size_t errlen) {
  if (!c->http) c->http = http_client_new(&c->loop.uv, err, errlen);
  return c->http;
}

const char *lw_http_code(int err) {
  switch (err) {
  case CURLE_OPERATION_TIMEDOUT: return "timeout";
  case CURLE_COULDNT_CONNECT: return "refused";
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY: return "dns";
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING: return "reset";
  case CURLE_WRITE_ERROR: return "too_large";
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS: return "tls";
  default: return "transport";
  }
}

void lw_hres_clear(lw_hres *h) {
  free(h->hdr);
  free(h->body);
  h->hdr = h->body = NULL;
}

void lw_hres_copy(lw_hres *h, const http_res *r) {
  size_t n = 0;
  h->status = r->status;
  h->err = r->err;
  h->truncated = r->truncated;
  snprintf(h->errmsg, sizeof h->errmsg, "%s", r->errmsg ? r->errmsg : "");
  for (size_t i = 0; i < r->n_headers; i++) n += strlen(r->headers[i].name) + strlen(r->headers[i].value) + 2;
  if ((h->hdr = malloc(n ? n : 1)) != NULL) {
    char *p = h->hdr;
    for (size_t i = 0; i < r->n_headers; i++) {
      p = stpcpy(p, r->headers[i].name) + 1;
      p = stpcpy(p, r->headers[i].value) + 1;
    }
    h->hdr_len = n;
  }
  if ((h->body = malloc(r->body_len + 1)) != NULL) {
    memcpy(h->body, r->body, r->body_len);
    h->body_len = r->body_len;
  }
  if (!h->hdr || !h->body) {
    h->err = CURLE_OUT_OF_MEMORY;
    snprintf(h->errmsg, sizeof h->errmsg, "out of memory");
  }
}

static void on_done(void *ud, const http_res *r) {
  lw_hres *h = ud;
  h->x = NULL;
  h->done = 1;
  lw_hres_copy(h, r);
  if (h->task) lw_wake(h->task, NULL, NULL);
}

const char *lw_hres_header(const lw_hres *h, const char *name) {
  for (const char *p = h->hdr; p && p < h->hdr + h->hdr_len;) {
    const char *v = p + strlen(p) + 1;
    if (strcmp(p, name) == 0) return v;
    p = v + strlen(v) + 1;
  }
  return NULL;
}

const char *lw_hres_error(const lw_hres *h) {
  return h->errmsg[0] ? h->errmsg : "transport error"; /* http.c always gives a message */
}

/* Pushes nil, message, code for a transport failure, else {status=, headers=, body=}. */
static int push_result(lua_State *L, lw_hres *h) {
  if (h->err) {
    lua_pushnil(L);
    lua_pushstring(L, lw_hres_error(h));
    lua_pushstring(L, lw_http_code(h->err));
    lw_hres_clear(h);
    return 3;
  }
  lw_hres_push(L, h);
  lw_hres_clear(h);
  return 1;
}

void lw_hres_push(lua_State *L, const lw_hres *h) {
  if (h->err) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, lw_hres_error(h));
    lua_setfield(L, -2, "error");
    lua_pushstring(L, lw_http_code(h->err));
    lua_setfield(L, -2, "code");
    return;
  }
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, h->status);
  lua_setfield(L, -2, "status");
  lua_newtable(L);
  for (const char *p = h->hdr; p && p < h->hdr + h->hdr_len;) {
    const char *v = p + strlen(p) + 1;
    if (lua_getfield(L, -1, p) == LUA_TSTRING) { /* repeated header: join as HTTP does */
      lua_pushliteral(L, ", ");
      lua_pushstring(L, v);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushstring(L, v);
    }
    lua_setfield(L, -2, p);
    p = v + strlen(v) + 1;
  }
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, h->body ? h->body : "", h->body_len);
  lua_setfield(L, -2, "body");
  if (h->truncated) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "truncated");
  }
}

static int hres_gc(lua_State *L) {
  lw_hres *h = lua_touserdata(L, 1);
  if (h->x && h->c->open) http_cancel(h->x);
  h->x = NULL;
  lw_hres_clear(h);
  return 0;
}

static int is_done(void *ud) { return ((lw_hres *)ud)->done; }

static int request_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  return push_result(L, lua_touserdata(L, (int)k));
}

static long opt_long(lua_State *L, const char *name, long def) {
  long v;
  if (lua_getfield(L, 1, name) == LUA_TNIL) v = def;
  else if (!lua_isinteger(L, -1) || (v = (long)lua_tointeger(L, -1)) < 0)
    return luaL_error(L, "wsup.http.request: '%s' must be a non-negative integer", name);
  lua_pop(L, 1);
  return v;
}

static const char *opt_str(lua_State *L, const char *name, const char *def) {
  const char *s = def;
  int t = lua_getfield(L, 1, name);
  if (t == LUA_TSTRING) {
    size_t n;
    const char *v = lua_tolstring(L, -1, &n);
    if (strlen(v) != n) luaL_error(L, "wsup.http.request: '%s' contains a NUL byte", name); /* C would cut it there */
    s = v;
  } else if (t != LUA_TNIL) {
    luaL_error(L, "wsup.http.request: '%s' must be a string", name);
  }
  lua_pop(L, 1); /* the string stays alive in the options table */
  return s;
}

/* Turns a {name = value} table at idx into "Name: value" lines kept on the stack (up to
 * max of them: the stack is grown first, a task's may be small). An empty or blank value is
 * sent as "Name;", libcurl's form for an empty header ("Name:" would remove the header). */
int lw_header_lines(lua_State *L, int idx, const char **lines, int max, const char *who) {
  int n = 0;
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, max + 4, who);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t kn, vn;
    if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
      luaL_error(L, "%s: headers must map names to strings", who);
    if (n == max) luaL_error(L, "%s: more than %d headers", who, max);
    const char *k = lua_tolstring(L, -2, &kn);
    if (!http_is_token(k, kn)) luaL_error(L, "%s: invalid header name \"%s\"", who, k);
    const char *v = lua_tolstring(L, -1, &vn); /* before vn is read: argument order is unspecified */
    if (!http_is_field_value(v, vn))
      luaL_error(L, "%s: header \"%s\": CR, LF or a control character in its value", who, k);
    size_t blank = 0; /* a value of only spaces and tabs is empty too (HTTP trims them), and curl drops "Name: " */
    while (blank < vn && (v[blank] == ' ' || v[blank] == '\t')) blank++;
    lines[n++] = blank < vn ? lua_pushfstring(L, "%s: %s", k, v) : lua_pushfstring(L, "%s;", k);
    lua_insert(L, -3); /* keep the line below the key */
    lua_pop(L, 1);
  }
  return n;
}

static int l_request(lua_State *L) {
  lw_ctx *c = lua_touserdata(L, lua_upvalueindex(1));
  const char *lines[MAX_HEADERS];
  http_req r = {0};
  char err[256] = "";
  lw_hres *h;
  int n = 0, hidx;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (c->loop.virt)
    return luaL_error(L, "wsup.http.request: HTTP needs the real clock, and wsup.clock() is \"virtual\"");
  r.url = opt_str(L, "url", NULL);
  if (!r.url) return luaL_error(L, "wsup.http.request: 'url' is required");
  if (strncmp(r.url, "http://", 7) != 0 && strncmp(r.url, "https://", 8) != 0)
    return luaL_error(L, "wsup.http.request: 'url' must start with http:// or https://");
  r.method = opt_str(L, "method", "GET");
  if (lua_getfield(L, 1, "body") == LUA_TSTRING) r.body = lua_tolstring(L, -1, &r.body_len);
  else if (!lua_isnil(L, -1)) return luaL_error(L, "wsup.http.request: 'body' must be a string");
  r.timeout_ms = opt_long(L, "timeout_ms", 30000);
  r.connect_timeout_ms = opt_long(L, "connect_timeout_ms", 10000);
  r.max_body = (size_t)opt_long(L, "max_body", 1 << 20);
  if (!r.max_body) return luaL_error(L, "wsup.http.request: 'max_body' must be a positive integer");
  if (lua_getfield(L, 1, "insecure") != LUA_TNIL && !lua_isboolean(L, -1))
    return luaL_error(L, "wsup.http.request: 'insecure' must be a boolean");
  r.insecure = lua_toboolean(L, -1);
  r.ca_file = opt_str(L, "ca_file", NULL);
  hidx = lua_gettop(L) + 1;
  if (lua_getfield(L, 1, "headers") == LUA_TTABLE) n = lw_header_lines(L, -1, lines, MAX_HEADERS, "wsup.http.request");
  else if (!lua_isnil(L, hidx)) return luaL_error(L, "wsup.http.request: 'headers' must be a table");
  r.headers = lines;
  r.n_headers = (size_t)n;
  char why[256];
  if (!lw_http(c, why, sizeof why)) return luaL_error(L, "wsup.http.request: cannot start the HTTP client: %s", why);
  h = lua_newuserdatauv(L, sizeof *h, 0);
  memset(h, 0, sizeof *h);
  h->c = c;
  if (luaL_newmetatable(L, HRES_MT)) {
    lua_pushcfunction(L, hres_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lw_task *t = lw_waiter(c, L, "wsup.http.request"); /* before the transfer starts */
  if (!(h->x = http_start(c->http, &r, on_done, h, err, sizeof err)))
    return luaL_error(L, "wsup.http.request: %s", err);
  if ((h->task = t) != NULL) return lua_yieldk(L, 0, (lua_KContext)lua_gettop(L), request_k);
  lw_drive(c, L, -1, is_done, h);
  return push_result(L, h);
}

void lw_open_http(lua_State *L) {
  static const luaL_Reg f[] = {{"request", l_request}, {NULL, NULL}};
  lua_newtable(L);
  lua_getfield(L, LUA_REGISTRYINDEX, LW_CTX);
  luaL_setfuncs(L, f, 1);
  lua_setfield(L, -2, "http");
}
