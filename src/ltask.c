/* ltask.c: tasks are coroutines driven by the loop. A task that waits (sleep, flush,
 * an HTTP request) registers one waker and yields; the waker resumes it from a loop
 * callback, so nothing is ever resumed from inside libuv or libcurl frames. */
#include <stdio.h>
#include <string.h>

#include "lwsup.h"

#define TASK_MT "wsup.task"

lw_ctx *lw_getctx(lua_State *L) {
  lw_ctx *c;
  lua_getfield(L, LUA_REGISTRYINDEX, LW_CTX);
  c = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!c) luaL_error(L, "wsup: module not loaded");
  return c;
}

int lw_drive(lw_ctx *c, lua_State *L, int64_t deadline, int (*done)(void *), void *ud) {
  lua_State *prev = c->L;
  int r;
  c->L = L;
  r = wl_run(&c->loop, deadline, done, ud);
  c->L = prev;
  return r;
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int lw_pcall(lua_State *L, int nargs, int nres) {
  int base = lua_gettop(L) - nargs, st;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  st = lua_pcall(L, nargs, nres, base);
  lua_remove(L, base);
  return st;
}

void lw_report(lua_State *L, const char *what) {
  lw_log(lw_getctx(L), 0, "wsup", "%s: %s", what, lua_tostring(L, -1));
  lua_pop(L, 1);
}

/* Removes a finished task from the anchor table so it can be collected. */
static void forget(lw_task *t, lua_State *L) {
  lw_ctx *c = t->ctx;
  wl_timer_stop(&c->loop, &t->timer);
  wl_cancel(&c->loop, &t->job);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->tasks);
  lua_pushthread(t->co);
  lua_xmove(t->co, L, 1);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  c->ntasks--;
}

static int tostring_p(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

/* Pushes the error object on top as a string: its __tostring runs under pcall, since a failing
 * one must not raise here, in a loop callback. */
static const char *error_string(lua_State *L) {
  if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) { /* no call: the C stack may be full */
    lua_pushvalue(L, -1);
    return lua_tostring(L, -1);
  }
  lua_pushcfunction(L, tostring_p);
  lua_pushvalue(L, -2);
  if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING) return lua_tostring(L, -1);
  lua_pop(L, 1);
  return lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, -1));
}

static void resume(lw_task *t, lua_State *L, int nargs) {
  lua_State *co = t->co;
  int nres = 0, st = lua_resume(co, L, nargs, &nres);
  if (st == LUA_YIELD) {
    lua_pop(co, nres); /* a plain coroutine.yield: the task waits for nothing */
    return;
  }
  if (st == LUA_OK) {
    if (!lua_checkstack(L, nres + 2)) { /* never raise here: drop what there is no room for */
      lua_pop(co, nres);
      nres = 0;
    }
    lua_xmove(co, L, nres);
  } else {
    lua_xmove(co, L, 1);
    luaL_traceback(L, co, error_string(L), 0);
    lua_replace(L, -3);
    lua_pop(L, 1);
    nres = 1;
  }
  forget(t, L);
  if (t->done) t->done(t, L, st, nres, t->done_ud);
  else if (st != LUA_OK) lw_report(L, "task error");
  else lua_pop(L, nres);
}

static int task_gc(lua_State *L) {
  lw_task *t = luaL_checkudata(L, 1, TASK_MT);
  if (t->ctx && t->ctx->open) {
    wl_timer_stop(&t->ctx->loop, &t->timer);
    wl_cancel(&t->ctx->loop, &t->job);
  }
  return 0;
}

lw_task *lw_spawn(lw_ctx *c, lua_State *L, int nargs, lw_done_fn done, void *ud) {
  lw_task *t;
  lua_State *co;
  luaL_checkstack(L, 6, "spawn");
  co = lua_newthread(L);
  if (!lua_checkstack(co, nargs + 1)) luaL_error(L, "wsup.spawn: too many arguments (%d)", nargs);
  t = lua_newuserdatauv(L, sizeof *t, 1);
  memset(t, 0, sizeof *t);
  if (luaL_newmetatable(L, TASK_MT)) {
    lua_pushcfunction(L, task_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -2);
  lua_setiuservalue(L, -2, 1); /* the task keeps its thread alive */
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->tasks);
  lua_pushvalue(L, -3);
  lua_pushvalue(L, -3);
  lua_rawset(L, -3); /* tasks[thread] = task: anchored until it ends */
  lua_pop(L, 3);
  t->ctx = c;
  t->co = co;
  t->done = done;
  t->done_ud = ud;
  c->ntasks++;
  lua_xmove(L, co, nargs + 1);
  resume(t, L, nargs);
  return t; /* valid until done has run (the registry anchors it): a caller with a done callback may keep it */
}

lw_task *lw_waiter(lw_ctx *c, lua_State *L, const char *who) {
  lw_task *t = lw_current(c, L);
  if (t && !lua_isyieldable(L)) luaL_error(L, "%s: cannot wait here: in a task, but where it cannot yield", who);
  if (!t && c->loop.running) luaL_error(L, "%s: cannot wait here: not in a task, and the loop is running", who);
  return t;
}

lw_task *lw_current(lw_ctx *c, lua_State *L) {
  lw_task *t;
  if (lua_pushthread(L)) {
    lua_pop(L, 1);
    return NULL;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->tasks);
  lua_insert(L, -2);
  lua_rawget(L, -2);
  t = lua_touserdata(L, -1);
  lua_pop(L, 2);
  return t;
}

static void wake_cb(void *ud) {
  lw_task *t = ud;
  lua_State *L = lw_driver(t->ctx);
  lw_push_fn push = t->push;
  int n;
  t->push = NULL;
  wl_timer_stop(&t->ctx->loop, &t->timer);
  luaL_checkstack(t->co, 4, "wake");
  n = push ? push(t->co, t->push_ud) : 0;
  resume(t, L, n);
}

void lw_wake(lw_task *t, lw_push_fn push, void *ud) {
  t->push = push;
  t->push_ud = ud;
  wl_defer(&t->ctx->loop, &t->job, wake_cb, t);
}

int lw_wait(lua_State *L) { return lua_yield(L, 0); }

/* wsup.sleep(ms): a task yields; anything else drives the loop for ms. */
static void sleep_fire(void *ud) {
  lw_task *t = ud;
  resume(t, lw_driver(t->ctx), 0);
}

static void flag_fire(void *ud) { *(int *)ud = 1; }
static int flag_set(void *ud) { return *(int *)ud; }

static int l_sleep(lua_State *L) {
  lw_ctx *c = lua_touserdata(L, lua_upvalueindex(1));
  int64_t d = lw_checkms(L, 1);
  lw_task *t = lw_waiter(c, L, "wsup.sleep");
  if (t) {
    wl_timer_start(&c->loop, &t->timer, d, sleep_fire, t);
    return lw_wait(L);
  }
  {
    wl_timer tm = {0};
    int fired = 0;
    wl_timer_start(&c->loop, &tm, d, flag_fire, &fired);
    lw_drive(c, L, -1, flag_set, &fired);
    wl_timer_stop(&c->loop, &tm);
  }
  return 0;
}

static int l_spawn(lua_State *L) {
  lw_ctx *c = lua_touserdata(L, lua_upvalueindex(1));
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lw_spawn(c, L, lua_gettop(L) - 1, NULL, NULL);
  return 0;
}

static int l_run(lua_State *L) {
  lw_ctx *c = lua_touserdata(L, lua_upvalueindex(1));
  int64_t deadline = -1;
  if (!lua_isnoneornil(L, 1)) deadline = wl_now(&c->loop) + lw_checkms(L, 1);
  lw_drive(c, L, deadline, NULL, NULL);
  lua_pushboolean(L, wl_busy(&c->loop));
  return 1;
}

void lw_open_tasks(lua_State *L) {
  static const luaL_Reg f[] = {{"sleep", l_sleep}, {"spawn", l_spawn}, {"run", l_run}, {NULL, NULL}};
  lua_getfield(L, LUA_REGISTRYINDEX, LW_CTX);
  luaL_setfuncs(L, f, 1);
}
