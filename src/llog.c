/* llog.c: one log format on stderr: time, level, who, message. Secrets stay out:
 * wsup never logs request headers, and URLs are logged with userinfo redacted. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "lwsup.h"

static const char *const levels[] = {"error", "warn", "info", "debug", NULL};

void lw_redact_url(char *dst, size_t n, const char *url) {
  const char *scheme = strstr(url, "://");
  const char *host = scheme ? scheme + 3 : url;
  const char *end = host + strcspn(host, "/?#");
  const char *at = NULL;
  for (const char *p = host; p < end; p++)
    if (*p == '@') at = p;
  if (!at) {
    snprintf(dst, n, "%s", url);
    return;
  }
  snprintf(dst, n, "%.*s***%s", (int)(host - url), url, at);
}

/* Copies src to dst (size n) with secrets masked: URL userinfo (scheme, then user:pw@ ->
 * scheme, then ***@) and the values of credential headers, to the end of the line. */
static void scrub(char *dst, size_t n, const char *src) {
  static const char *const creds[] = {"authorization:", "proxy-authorization:", "cookie:", "set-cookie:",
                                      "x-api-key:", "x-auth-token:", NULL};
  size_t o = 0;
  const char *p = src;
  while (*p && o + 8 < n) {
    if (p[0] == ':' && p[1] == '/' && p[2] == '/') {
      const char *h = p + 3, *e = h + strcspn(h, "/?# \t\r\n\"'<>"), *at = NULL;
      for (const char *q = h; q < e; q++)
        if (*q == '@') at = q;
      if (at) {
        memcpy(dst + o, "://***", 6);
        o += 6;
        p = at;
        continue;
      }
    }
    if (p == src || !(p[-1] == '-' || (p[-1] >= 'a' && p[-1] <= 'z') || (p[-1] >= 'A' && p[-1] <= 'Z'))) {
      int i = 0;
      while (creds[i] && strncasecmp(p, creds[i], strlen(creds[i])) != 0) i++;
      if (creds[i]) {
        size_t k = strlen(creds[i]);
        if (o + k + 5 >= n) break;
        memcpy(dst + o, p, k);
        memcpy(dst + o + k, " ***", 4);
        o += k + 4;
        p += k + strcspn(p + k, "\r\n");
        continue;
      }
    }
    dst[o++] = *p++;
  }
  dst[o] = '\0';
}

void lw_log(lw_ctx *c, int level, const char *who, const char *fmt, ...) {
  char when[32], raw[1024], msg[1100];
  struct timespec ts;
  struct tm tm;
  va_list ap;
  if (level > c->log_level) return;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  va_start(ap, fmt);
  vsnprintf(raw, sizeof raw, fmt, ap);
  va_end(ap);
  scrub(msg, sizeof msg, raw);
  if (isatty(2)) fputs("\r\33[K", stderr); /* off a progress line being redrawn there */
  fprintf(stderr, "%s.%03ldZ %-5s %s: %s\n", when, ts.tv_nsec / 1000000, levels[level], who ? who : "wsup", msg);
  fflush(stderr);
}

static int checklevel(lua_State *L, int idx) {
  return luaL_checkoption(L, idx, NULL, levels);
}

/* wsup.log(level, fmt, ...): fmt as string.format. */
static int l_log(lua_State *L) {
  lw_ctx *c = lua_touserdata(L, lua_upvalueindex(1));
  int level = checklevel(L, 1);
  if (level > c->log_level) return 0;
  lua_getglobal(L, "string");
  lua_getfield(L, -1, "format");
  lua_remove(L, -2);
  lua_insert(L, 2);
  lua_call(L, lua_gettop(L) - 2, 1);
  lw_log(c, level, "script", "%s", lua_tostring(L, -1));
  return 0;
}

/* wsup.log_level([level]): returns the level, and sets it when given. */
static int l_log_level(lua_State *L) {
  lw_ctx *c = lua_touserdata(L, lua_upvalueindex(1));
  if (!lua_isnoneornil(L, 1)) c->log_level = checklevel(L, 1);
  lua_pushstring(L, levels[c->log_level]);
  return 1;
}

/* wsup.drain_ms([ms]): how long the host drains uploaders at the end. */
static int l_drain_ms(lua_State *L) {
  lw_ctx *c = lua_touserdata(L, lua_upvalueindex(1));
  if (!lua_isnoneornil(L, 1)) c->drain_ms = lw_checkms(L, 1);
  lua_pushinteger(L, (lua_Integer)c->drain_ms);
  return 1;
}

void lw_open_log(lua_State *L) {
  static const luaL_Reg f[] = {{"log", l_log}, {"log_level", l_log_level}, {"drain_ms", l_drain_ms}, {NULL, NULL}};
  lua_getfield(L, LUA_REGISTRYINDEX, LW_CTX);
  luaL_setfuncs(L, f, 1);
}
