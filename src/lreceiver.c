/* lreceiver.c: the reference receiver (receiver.c) as Lua userdata, and the
 * `wsup serve` command.
 *
 * The receiver serves from libmicrohttpd's own thread and never calls into Lua or the
 * wsup loop: an open receiver is not loop work, and wsup.run() does not wait for it.
 * Once closed, the server and its data are gone: url, port and tostring still answer,
 * every method but close raises "receiver is closed".
 *
 * r:chaos{...} is receiver.c's rcv_chaos: probabilistic failures, delays and dropped
 * connections for PUTs. A dropped request is not applied unless it is a
 * drop_after_apply one (applied, then the connection closed without an answer). */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lwsup.h"
#include "receiver.h"

#define RV_MT "wsup.receiver"
#define RV_STATUSES 900      /* receiver.c counts statuses 100..999 */
#define RV_RETRY_MAX 63      /* longest Retry-After text rcv_fail keeps */
#define RV_URL_MAX (INET6_ADDRSTRLEN + 16)
#define SERVE_PORT 8080

typedef struct lw_rcv {
  rcv *r;                       /* owned; NULL until started and once closed */
  int port;                     /* the bound port, kept after close */
  char host[INET6_ADDRSTRLEN];  /* numeric, as given */
} lw_rcv;

/* 0 if host is a numeric IPv4 or IPv6 address (all rcv_start accepts). */
static int check_host(const char *host) {
  unsigned char buf[sizeof(struct in6_addr)];
  if (strlen(host) >= INET6_ADDRSTRLEN) return -1;
  return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1 ? 0 : -1;
}

static void format_url(char *dst, size_t n, const char *host, int port) {
  if (strchr(host, ':')) snprintf(dst, n, "http://[%s]:%d", host, port);
  else snprintf(dst, n, "http://%s:%d", host, port);
}

/* ---- the Lua binding ---- */

static lw_rcv *checkrcv(lua_State *L) { return luaL_checkudata(L, 1, RV_MT); }

static rcv *openrcv(lua_State *L) {
  lw_rcv *w = checkrcv(L);
  if (!w->r) luaL_error(L, "receiver is closed");
  return w->r;
}

/* Raises unless every key of the table at idx is one of known. */
static void check_opt_names(lua_State *L, int idx, const char *const *known, const char *who) {
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int i = 0;
    if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "%s: option names must be strings", who);
    while (known[i] && strcmp(known[i], lua_tostring(L, -2)) != 0) i++;
    if (!known[i]) luaL_error(L, "%s: unknown option '%s'", who, lua_tostring(L, -2));
    lua_pop(L, 1);
  }
}

/* An integer option in [lo, hi], or def when absent. */
static lua_Integer opt_int(lua_State *L, const char *name, lua_Integer lo, lua_Integer hi, lua_Integer def,
                           const char *what) {
  lua_Integer v = def;
  int ok = 1;
  if (lua_getfield(L, 1, name) != LUA_TNIL) {
    v = lua_tointegerx(L, -1, &ok);
    if (lua_type(L, -1) != LUA_TNUMBER || !ok || v < lo || v > hi)
      luaL_error(L, "wsup.receiver: option '%s' must be %s", name, what);
  }
  lua_pop(L, 1);
  return v;
}

/* Fills o->merge_keys with pointers into the option's strings, which arg 1 keeps alive;
 * the pointer array is a userdata left on the stack. */
static void opt_keys(lua_State *L, rcv_opts *o) {
  const char **keys;
  lua_Integer n;
  if (lua_getfield(L, 1, "merge_keys") == LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  if (!lua_istable(L, -1)) luaL_error(L, "wsup.receiver: option 'merge_keys' must be a list of strings");
  n = luaL_len(L, -1);
  if (n < 0 || (lua_Unsigned)n > INT_MAX / sizeof *keys)
    luaL_error(L, "wsup.receiver: option 'merge_keys' is too long");
  keys = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *keys, 0);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, -2, i) != LUA_TSTRING)
      luaL_error(L, "wsup.receiver: option 'merge_keys' must be a list of strings");
    keys[i - 1] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  lua_remove(L, -2);
  o->merge_keys = keys;
  o->n_merge_keys = (size_t)n;
}

static int l_receiver(lua_State *L) {
  static const char *const known[] = {"host", "port", "max_body", "merge_keys", NULL};
  rcv_opts o = {0};
  char err[256];
  lw_rcv *w;
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  check_opt_names(L, 1, known, "wsup.receiver");
  if (lua_getfield(L, 1, "host") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TSTRING || check_host(lua_tostring(L, -1)) != 0)
      return luaL_error(L, "wsup.receiver: option 'host' must be a numeric IPv4 or IPv6 address");
    o.host = lua_tostring(L, -1); /* kept alive by arg 1 */
  }
  lua_pop(L, 1);
  o.port = (int)opt_int(L, "port", 0, 65535, 0, "an integer in 0..65535");
  o.max_body = (size_t)opt_int(L, "max_body", 1, LUA_MAXINTEGER, 1024 * 1024, "a positive integer (bytes)");
  opt_keys(L, &o);
  /* Userdata first: once the server runs, nothing here may raise. */
  w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  snprintf(w->host, sizeof w->host, "%s", o.host ? o.host : "127.0.0.1");
  luaL_setmetatable(L, RV_MT);
  if (!(w->r = rcv_start(&o, err, sizeof err))) {
    luaL_pushfail(L);
    lua_pushfstring(L, "wsup.receiver: cannot serve on %s port %d: %s", w->host, o.port, err);
    return 2;
  }
  w->port = rcv_port(w->r);
  return 1;
}

static int rv_index(lua_State *L) {
  lw_rcv *w = checkrcv(L);
  if (lua_type(L, 2) == LUA_TSTRING) {
    const char *k = lua_tostring(L, 2);
    if (strcmp(k, "url") == 0) {
      char url[RV_URL_MAX];
      format_url(url, sizeof url, w->host, w->port);
      lua_pushstring(L, url);
      return 1;
    }
    if (strcmp(k, "port") == 0) {
      lua_pushinteger(L, w->port);
      return 1;
    }
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1)); /* the methods */
  return 1;
}

static int push_json(lua_State *L) {
  lc_push(L, lua_touserdata(L, 1));
  return 1;
}

static int rv_state(lua_State *L) {
  rcv *r = openrcv(L);
  const char *path = luaL_optstring(L, 2, "/worker");
  json_t *s = rcv_state(r, path); /* owned here; freed before any error propagates */
  int st;
  if (!s) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushcfunction(L, push_json);
  lua_pushlightuserdata(L, s);
  st = lua_pcall(L, 1, 1, 0);
  json_decref(s);
  if (st != LUA_OK) return lua_error(L);
  return 1;
}

static int rv_stats(lua_State *L) {
  rcv *r = openrcv(L);
  int statuses[RV_STATUSES];
  unsigned long counts[RV_STATUSES];
  rcv_totals t;
  size_t n = rcv_snapshot(r, &t, statuses, counts, RV_STATUSES); /* one snapshot: the counts add up */
  if (n > RV_STATUSES) n = RV_STATUSES;
  lua_createtable(L, 0, (int)n + 3);
  lua_pushinteger(L, (lua_Integer)t.requests);
  lua_setfield(L, -2, "requests");
  if (t.dropped) { /* only once there were some, like the statuses */
    lua_pushinteger(L, (lua_Integer)t.dropped);
    lua_setfield(L, -2, "dropped");
    lua_pushinteger(L, (lua_Integer)t.dropped_applied);
    lua_setfield(L, -2, "dropped_applied");
  }
  for (size_t i = 0; i < n; i++) {
    lua_pushinteger(L, (lua_Integer)counts[i]);
    lua_rawseti(L, -2, statuses[i]);
  }
  return 1;
}

/* The Retry-After text of the value at idx (whole seconds or header text) into *ra (buf
 * for a number; NULL for nil). Returns NULL, or why the value is bad. */
static const char *retry_text(lua_State *L, int idx, char *buf, size_t n, const char **ra) {
  static const char *const type_msg = "must be a non-negative integer (seconds) or a string";
  *ra = NULL;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    int isint;
    lua_Integer s = lua_tointegerx(L, idx, &isint);
    if (!isint || s < 0) return type_msg;
    snprintf(buf, n, "%lld", (long long)s);
    *ra = buf;
  } else if (lua_type(L, idx) == LUA_TSTRING) {
    size_t len;
    const char *t = lua_tolstring(L, idx, &len);
    if (len > RV_RETRY_MAX) return "is longer than 63 bytes";
    for (size_t i = 0; i < len; i++)
      if ((unsigned char)t[i] < 0x20 || t[i] == 0x7f) return "has a control character";
    *ra = t;
  } else if (!lua_isnoneornil(L, idx)) {
    return type_msg;
  }
  return NULL;
}

/* r:fail(n, status [, retry_after]): retry_after is whole seconds or header text. */
static int rv_fail(lua_State *L) {
  rcv *r = openrcv(L);
  lua_Integer n = luaL_checkinteger(L, 2), status = luaL_checkinteger(L, 3);
  char retry[RV_RETRY_MAX + 1];
  const char *ra, *why;
  luaL_argcheck(L, n >= 0, 2, "count must be a non-negative integer");
  luaL_argcheck(L, status >= 200 && status <= 999, 3, "status must be in 200..999");
  if ((why = retry_text(L, 4, retry, sizeof retry, &ra)) != NULL)
    luaL_argerror(L, 4, lua_pushfstring(L, "retry_after %s", why));
  rcv_fail(r, n > INT_MAX ? INT_MAX : (int)n, (int)status, ra);
  return 0;
}

#define CHAOS_WHO "receiver:chaos"

/* A probability option of the chaos table (arg 2) in [0, 1], def when absent. */
static double opt_prob(lua_State *L, const char *name, double def) {
  double v = def;
  if (lua_getfield(L, 2, name) != LUA_TNIL) {
    v = lua_tonumber(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || !(v >= 0 && v <= 1))
      luaL_error(L, CHAOS_WHO ": option '%s' must be a probability (a number in 0..1)", name);
  }
  lua_pop(L, 1);
  return v;
}

/* A non-negative integer of ms in [0, INT_MAX] at idx; raises naming what. */
static int chaos_ms(lua_State *L, int idx, const char *what) {
  int isint;
  lua_Integer v = lua_tointegerx(L, idx, &isint);
  if (lua_type(L, idx) != LUA_TNUMBER || !isint || v < 0 || v > INT_MAX)
    luaL_error(L, CHAOS_WHO ": %s must be a non-negative integer (ms)", what);
  return (int)v;
}

/* delay_ms = N or {LO, HI} (uniform). */
static void opt_delay(lua_State *L, rcv_chaos_opts *o) {
  int t = lua_getfield(L, 2, "delay_ms");
  if (t == LUA_TNUMBER) {
    o->delay_min_ms = o->delay_max_ms = chaos_ms(L, -1, "option 'delay_ms'");
  } else if (t == LUA_TTABLE) {
    if (luaL_len(L, -1) != 2) luaL_error(L, CHAOS_WHO ": option 'delay_ms' must be N or {LO, HI}");
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    o->delay_min_ms = chaos_ms(L, -2, "option 'delay_ms' LO");
    o->delay_max_ms = chaos_ms(L, -1, "option 'delay_ms' HI");
    if (o->delay_max_ms < o->delay_min_ms) luaL_error(L, CHAOS_WHO ": option 'delay_ms' must have LO <= HI");
    lua_pop(L, 2);
  } else if (t != LUA_TNIL) {
    luaL_error(L, CHAOS_WHO ": option 'delay_ms' must be N or {LO, HI}");
  }
  lua_pop(L, 1);
}

/* statuses = {S, ...} into st (RCV_CHAOS_STATUSES slots). */
static void opt_statuses(lua_State *L, rcv_chaos_opts *o, int *st) {
  lua_Integer n = 0;
  int t = lua_getfield(L, 2, "statuses");
  if (t != LUA_TNIL) {
    if (t == LUA_TTABLE) n = luaL_len(L, -1);
    if (n < 1 || n > RCV_CHAOS_STATUSES)
      luaL_error(L, CHAOS_WHO ": option 'statuses' must be a list of 1..%d statuses", RCV_CHAOS_STATUSES);
    for (lua_Integer i = 1; i <= n; i++) {
      int isint;
      lua_Integer s;
      lua_rawgeti(L, -1, i);
      s = lua_tointegerx(L, -1, &isint);
      if (lua_type(L, -1) != LUA_TNUMBER || !isint || s < 200 || s > 999)
        luaL_error(L, CHAOS_WHO ": option 'statuses' must hold statuses in 200..999");
      st[i - 1] = (int)s;
      lua_pop(L, 1);
    }
    o->statuses = st;
    o->n_statuses = (size_t)n;
  }
  lua_pop(L, 1);
}

/* r:chaos{fail=, statuses=, retry_after=, retry_after_value=, delay_ms=, drop=,
 * drop_after_apply=, seed=} turns chaos on (every call reseeds); r:chaos(nil) turns it off. */
static int rv_chaos(lua_State *L) {
  static const char *const known[] = {"fail", "statuses", "retry_after", "retry_after_value", "delay_ms",
                                      "drop", "drop_after_apply", "seed", NULL};
  rcv *r = openrcv(L);
  rcv_chaos_opts o = {0};
  int st[RCV_CHAOS_STATUSES];
  char retry[RV_RETRY_MAX + 1];
  int has_value;
  const char *why;
  if (lua_isnoneornil(L, 2)) {
    rcv_chaos(r, NULL);
    return 0;
  }
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  check_opt_names(L, 2, known, CHAOS_WHO);
  o.fail = opt_prob(L, "fail", 0);
  o.drop = opt_prob(L, "drop", 0);
  o.drop_after_apply = opt_prob(L, "drop_after_apply", 0);
  if (o.fail + o.drop + o.drop_after_apply > 1.0 + 1e-9)
    luaL_error(L, CHAOS_WHO ": fail + drop + drop_after_apply must be at most 1");
  has_value = lua_getfield(L, 2, "retry_after_value") != LUA_TNIL; /* stays on the stack: o borrows it */
  if ((why = retry_text(L, -1, retry, sizeof retry, &o.retry_after_value)) != NULL)
    luaL_error(L, CHAOS_WHO ": option 'retry_after_value' %s", why);
  o.retry_after = opt_prob(L, "retry_after", has_value ? 1 : 0);
  opt_statuses(L, &o, st);
  opt_delay(L, &o);
  if (lua_getfield(L, 2, "seed") != LUA_TNIL) {
    int isint;
    lua_Integer seed = lua_tointegerx(L, -1, &isint);
    if (lua_type(L, -1) != LUA_TNUMBER || !isint)
      luaL_error(L, CHAOS_WHO ": option 'seed' must be an integer");
    o.seed = (uint64_t)seed;
  }
  lua_pop(L, 1);
  if (rcv_chaos(r, &o) != 0) luaL_error(L, CHAOS_WHO ": bad options"); /* checked above: not reached */
  return 0;
}

static int rv_delay(lua_State *L) {
  rcv *r = openrcv(L);
  int64_t ms = lw_checkms(L, 2);
  rcv_delay(r, ms > INT_MAX ? INT_MAX : (int)ms);
  return 0;
}

static int rv_close(lua_State *L) {
  lw_rcv *w = checkrcv(L);
  rcv_stop(w->r); /* NULL is a no-op */
  w->r = NULL;
  return 0;
}

static int rv_tostring(lua_State *L) {
  lw_rcv *w = checkrcv(L);
  char url[RV_URL_MAX];
  format_url(url, sizeof url, w->host, w->port);
  lua_pushfstring(L, "wsup.receiver %s (%s)", url, w->r ? "open" : "closed");
  return 1;
}

void lw_open_receiver(lua_State *L) {
  static const luaL_Reg meta[] = {{"__gc", rv_close}, {"__close", rv_close}, {"__tostring", rv_tostring},
                                  {NULL, NULL}};
  static const luaL_Reg meth[] = {{"state", rv_state}, {"stats", rv_stats}, {"fail", rv_fail},
                                  {"delay", rv_delay}, {"chaos", rv_chaos}, {"close", rv_close},
                                  {NULL, NULL}};
  luaL_newmetatable(L, RV_MT);
  luaL_setfuncs(L, meta, 0);
  luaL_newlib(L, meth);
  lua_pushcclosure(L, rv_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_receiver);
  lua_setfield(L, -2, "receiver");
}

/* ---- wsup serve ---- */

static const char serve_usage[] =
    "usage: wsup serve [--host H] [--port N] [--max-body BYTES]\n"
    "  Runs the reference receiver until SIGINT or SIGTERM; one JSON line per request on stdout.\n"
    "  --host H          numeric IPv4 or IPv6 address to bind (default 127.0.0.1)\n"
    "  --port N          0..65535, 0 picks a free port (default 8080)\n"
    "  --max-body BYTES  largest PUT body accepted (default 1048576)\n";

/* A JSON string for s; bytes that are not UTF-8 become '?'. New reference or NULL. */
static json_t *text(const char *s) {
  json_t *j = json_string(s);
  char *c;
  if (j || !(c = strdup(s))) return j;
  for (char *p = c; *p; p++)
    if ((unsigned char)*p >= 0x80) *p = '?';
  j = json_string(c);
  free(c);
  return j;
}

/* The request hook, on the server thread: one compact line per request on ud (a FILE*),
 * written whole under the stream's lock. */
static void serve_line(void *ud, const char *method, const char *path, int status, const json_t *state) {
  FILE *out = ud;
  json_t *o = json_pack("{s:o?,s:o?,s:i,s:O?}", "method", text(method), "path", text(path), "status", status,
                        "state", (json_t *)state); /* o? steals; O? increfs the borrowed state */
  char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (!line) {
    fprintf(stderr, "wsup: cannot log a %d response to %s\n", status, method);
    return;
  }
  flockfile(out);
  fputs(line, out);
  fputc('\n', out);
  fflush(out);
  funlockfile(out);
  free(line);
}

static int serve_fail(const char *msg, const char *arg) {
  fprintf(stderr, "wsup serve: %s%s%s\n%s", msg, arg ? " " : "", arg ? arg : "", serve_usage);
  return 2;
}

/* Digits only, at most max; -1 when not. */
static long long parse_count(const char *s, long long max) {
  char *end;
  unsigned long long v;
  if (*s < '0' || *s > '9') return -1;
  errno = 0;
  v = strtoull(s, &end, 10);
  if (errno || *end || v > (unsigned long long)max) return -1;
  return (long long)v;
}

int lw_serve(int argc, char **argv) {
  const char *host = "127.0.0.1";
  long long port = SERVE_PORT, max_body = 1024 * 1024;
  rcv_opts o = {0};
  sigset_t wait_on, old;
  char err[256], url[RV_URL_MAX];
  rcv *r;
  int sig = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = NULL, *eq = strchr(a, '=');
    size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(serve_usage, stdout);
      return 0;
    }
    int which = nlen == 6 && strncmp(a, "--host", 6) == 0   ? 'h'
                : nlen == 6 && strncmp(a, "--port", 6) == 0   ? 'p'
                : nlen == 10 && strncmp(a, "--max-body", 10) == 0 ? 'm'
                                                               : 0;
    if (strncmp(a, "--", 2) != 0) return serve_fail("unexpected argument", a);
    if (!which) return serve_fail("unknown option", a);
    if (eq) v = eq + 1;
    else if (i + 1 < argc) v = argv[++i];
    else return serve_fail("missing value for", a);
    if (which == 'h') {
      if (check_host(v) != 0) return serve_fail("--host must be a numeric IPv4 or IPv6 address, not", v);
      host = v;
    } else if (which == 'p') {
      if ((port = parse_count(v, 65535)) < 0) return serve_fail("--port must be in 0..65535, not", v);
    } else if ((max_body = parse_count(v, LLONG_MAX)) < 1) {
      return serve_fail("--max-body must be a positive integer, not", v);
    }
  }
  o.host = host;
  o.port = (int)port;
  o.max_body = (size_t)max_body;
  /* Blocked before the server's threads exist, so they inherit the mask and only
   * sigwait below takes these. Then back to the default action, so that a SIGINT
   * ignored by inheritance (a shell's background job) still stops the server. */
  sigemptyset(&wait_on);
  sigaddset(&wait_on, SIGINT);
  sigaddset(&wait_on, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &wait_on, &old);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGPIPE, SIG_IGN); /* a closed stdout must not kill the server */
  if (!(r = rcv_start(&o, err, sizeof err))) {
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    fprintf(stderr, "wsup serve: cannot serve on %s port %lld: %s\n", host, port, err);
    return 1;
  }
  rcv_on_request(r, serve_line, stdout);
  format_url(url, sizeof url, host, rcv_port(r));
  fprintf(stderr, "wsup: serving on %s\n", url);
  fflush(stderr);
  while (sigwait(&wait_on, &sig) != 0) {
  }
  rcv_on_request(r, NULL, NULL);
  rcv_stop(r);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  fprintf(stderr, "wsup: stopped (%s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  return 0;
}
