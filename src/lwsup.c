/* lwsup.c: the module `wsup_core`: the per-state context, the clock and timers. */
#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lwsup.h"

#define CTX_MT "wsup.ctx"
#define TIMER_MT "wsup.timer"

int64_t lw_checkms(lua_State *L, int idx) {
  lua_Number ms = luaL_checknumber(L, idx);
  luaL_argcheck(L, ms >= 0, idx, "duration must be a non-negative number of ms");
  return ms > (lua_Number)LW_MS_MAX ? LW_MS_MAX : (int64_t)ms;
}

static lw_ctx *upctx(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

static int l_clock(lua_State *L) {
  lw_ctx *c = upctx(L);
  if (!lua_isnoneornil(L, 1)) {
    static const char *const modes[] = {"real", "virtual", NULL};
    int virt = luaL_checkoption(L, 1, NULL, modes);
    unsigned self = lw_current(c, L) != NULL;
    if (virt != c->loop.virt && c->ntasks > self)
      return luaL_error(L, "wsup.clock: cannot switch while tasks are active");
    if (wl_set_virtual(&c->loop, virt) != 0)
      return luaL_error(L, "wsup.clock: cannot switch while timers are active");
  }
  lua_pushstring(L, c->loop.virt ? "virtual" : "real");
  return 1;
}

static int l_now(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)wl_now(&upctx(L)->loop));
  return 1;
}

/* Wall-clock microseconds since the epoch, as an exact integer. */
static int l_time_us(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
  return 1;
}

static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

static int l_randomseed(lua_State *L) {
  wl_seed(&upctx(L)->loop, (uint64_t)luaL_checkinteger(L, 1));
  return 0;
}

/* Timers: a handle is anchored in the registry while it is active, so a script
 * need not keep it; fn runs as a task on each tick. */
typedef struct lw_timer {
  wl_timer t;
  lw_ctx *c;
  int64_t period;   /* 0 for a one-shot */
  int self;         /* registry ref while active */
} lw_timer;

static void timer_unanchor(lw_timer *tm) {
  luaL_unref(tm->c->main, LUA_REGISTRYINDEX, tm->self);
  tm->self = LUA_NOREF;
  tm->c->user_timers--;
}

static void timer_fire(void *ud) {
  lw_timer *tm = ud;
  lua_State *L = lw_driver(tm->c);
  luaL_checkstack(L, 4, "timer");
  lua_rawgeti(L, LUA_REGISTRYINDEX, tm->self);
  lua_getiuservalue(L, -1, 1);
  lua_remove(L, -2);
  if (tm->period) wl_timer_start(&tm->c->loop, &tm->t, tm->period, timer_fire, tm);
  else timer_unanchor(tm);
  lw_spawn(tm->c, L, 0, NULL, NULL);
}

static int new_timer(lua_State *L, int repeat) {
  lw_ctx *c = upctx(L);
  int64_t ms = lw_checkms(L, 1);
  lw_timer *tm;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  tm = lua_newuserdatauv(L, sizeof *tm, 1);
  memset(tm, 0, sizeof *tm);
  luaL_setmetatable(L, TIMER_MT);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  tm->c = c;
  tm->period = repeat ? (ms > 0 ? ms : 1) : 0;
  lua_pushvalue(L, -1);
  tm->self = luaL_ref(L, LUA_REGISTRYINDEX);
  c->user_timers++;
  wl_timer_start(&c->loop, &tm->t, ms, timer_fire, tm);
  return 1;
}

static int l_after(lua_State *L) { return new_timer(L, 0); }
static int l_every(lua_State *L) { return new_timer(L, 1); }

static int timer_stop(lua_State *L) {
  lw_timer *tm = luaL_checkudata(L, 1, TIMER_MT);
  if (tm->c->open) wl_timer_stop(&tm->c->loop, &tm->t);
  if (tm->self != LUA_NOREF) timer_unanchor(tm);
  return 0;
}

static int timer_active(lua_State *L) {
  lw_timer *tm = luaL_checkudata(L, 1, TIMER_MT);
  lua_pushboolean(L, wl_timer_active(&tm->t));
  return 1;
}

static int timer_tostring(lua_State *L) {
  lw_timer *tm = luaL_checkudata(L, 1, TIMER_MT);
  lua_pushfstring(L, "wsup.timer (%s, %s)", tm->period ? "every" : "after",
                  wl_timer_active(&tm->t) ? "active" : "stopped");
  return 1;
}

static int timer_gc(lua_State *L) {
  lw_timer *tm = luaL_checkudata(L, 1, TIMER_MT);
  if (tm->c->open) wl_timer_stop(&tm->c->loop, &tm->t);
  return 0;
}

void lw_open_class(lua_State *L, const char *mt, const luaL_Reg *meth, const luaL_Reg *f) {
  luaL_newmetatable(L, mt);
  lua_pushvalue(L, -1);
  luaL_setfuncs(L, meth, 1); /* methods get the metatable as upvalue, for fast checks */
  lua_pushvalue(L, -1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, LW_CTX);
  luaL_setfuncs(L, f, 1);
}

void lw_open_timers(lua_State *L) {
  static const luaL_Reg meth[] = {{"stop", timer_stop}, {"active", timer_active}, {"__close", timer_stop},
                                  {"__gc", timer_gc}, {"__tostring", timer_tostring}, {NULL, NULL}};
  static const luaL_Reg f[] = {{"after", l_after}, {"every", l_every}, {"clock", l_clock},
                               {"now", l_now}, {"time_us", l_time_us}, {"isatty", l_isatty}, {"randomseed", l_randomseed}, {NULL, NULL}};
  lw_open_class(L, TIMER_MT, meth, f);
}

static int ctx_gc(lua_State *L) {
  lw_ctx *c = lua_touserdata(L, 1);
  if (c->open) {
    c->open = 0;
    if (c->http) http_client_close(c->http, NULL, NULL);
    wl_close(&c->loop);
  }
  free(c->gone);
  c->gone = NULL;
  return 0;
}

int luaopen_wsup_core(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LW_CTX);
  if (lua_isnil(L, -1)) {
    /* Created before anything that needs it, so finalized after all of them. */
    lw_ctx *c = lua_newuserdatauv(L, sizeof *c, 0);
    int rc;
    memset(c, 0, sizeof *c);
    luaL_newmetatable(L, CTX_MT);
    lua_pushcfunction(L, ctx_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    if ((rc = wl_init(&c->loop)) != 0) return luaL_error(L, "wsup: cannot start the loop: %s", uv_strerror(rc));
    c->open = 1;
    c->drain_ms = 5000;
    c->log_level = 2;
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    c->main = lua_tothread(L, -1);
    lua_pop(L, 1);
    lua_newtable(L);
    c->tasks = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_setfield(L, LUA_REGISTRYINDEX, LW_CTX);
  }
  lua_pop(L, 1);
  lua_newtable(L);
  lw_open_tasks(L);
  lw_open_timers(L);
  lw_open_uploader(L);
  lw_open_receiver(L);
  lw_open_http(L);
  lw_open_producers(L);
  lw_open_log(L);
  lw_open_crypto(L);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_pushliteral(L, WSUP_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
