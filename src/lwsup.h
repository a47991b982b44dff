/* lwsup.h: what the Lua bindings share: the per-state context, tasks, and the
 * Lua <-> JSON conversion. Not a public API. */
#ifndef WSUP_LWSUP_H
#define WSUP_LWSUP_H

#include <jansson.h>
#include <lua.h>
#include <lauxlib.h>

#include "evloop.h"
#include "patch.h"

#define WSUP_VERSION "0.1.0"
#define LW_CTX "wsup.ctx"          /* registry field: the context userdata */
#define LW_MAXDEPTH 100            /* deepest nesting a patch may have */

typedef struct lw_task lw_task;

/* One per lua_State that loaded the module; a full userdata, finalized last. */
typedef struct lw_ctx {
  wl_loop loop;
  lua_State *main;   /* the main thread: registry work from any context */
  lua_State *L;      /* the thread driving the loop now; NULL outside wl_run */
  int tasks;         /* registry ref: thread -> task userdata, anchors live tasks */
  unsigned ntasks;   /* tasks started and not yet finished */
  int open;          /* 0 once finalized */
} lw_ctx;

lw_ctx *lw_getctx(lua_State *L);   /* the context, from the registry */

/* Runs the loop on behalf of L (see wl_run); nests safely. */
int lw_drive(lw_ctx *c, lua_State *L, int64_t deadline, int (*done)(void *), void *ud);

/* Called when a task ends: on LUA_OK its nres results, otherwise an error message
 * with a traceback, sit on top of L (the driving thread); the callee pops them. */
typedef void (*lw_done_fn)(lw_task *t, lua_State *L, int status, int nres, void *ud);
/* Pushes the values a waiting task resumes with; returns how many. */
typedef int (*lw_push_fn)(lua_State *co, void *ud);

struct lw_task {
  lw_ctx *ctx;
  lua_State *co;     /* kept alive by the task's user value */
  wl_timer timer;    /* sleep and timeouts */
  wl_job job;        /* a resume on the next turn */
  lw_push_fn push;   /* what the next resume passes */
  void *push_ud;
  lw_done_fn done;   /* NULL: errors go to stderr */
  void *done_ud;
  struct lw_task *next_waiter; /* in an uploader's list of flush waiters */
  void *waiting_on;  /* what next_waiter links into; borrowed */
  int flushed;       /* result handed to a flush waiter */
};

/* Starts the function below nargs arguments on L's top as a task, now. Pops them. */
lw_task *lw_spawn(lw_ctx *c, lua_State *L, int nargs, lw_done_fn done, void *ud);
lw_task *lw_current(lw_ctx *c, lua_State *L); /* the task running on L, or NULL */
void lw_wake(lw_task *t, lw_push_fn push, void *ud); /* resumes t on the next turn */
int lw_wait(lua_State *L);                   /* yields the current task; use as `return lw_wait(L)` */
void lw_report(lua_State *L, const char *what); /* prints the error on top of L to stderr, pops it */
/* Calls the function below nargs args under a traceback handler; returns the status and
 * leaves one result or the message with traceback. */
int lw_pcall(lua_State *L, int nargs);

/* Lua -> JSON: raise "path: reason" on bad input without side effects. */
void lc_check_patch(lua_State *L, int idx);
json_t *lc_build(lua_State *L, int idx); /* idx already checked; new reference */
void lc_apply(lua_State *L, int idx, json_t *pending, const pt_keys *k);
void lc_push(lua_State *L, const json_t *v); /* JSON -> a fresh Lua value */

int64_t lw_checkms(lua_State *L, int idx); /* a non-negative duration in ms */

/* Each adds its functions to the module table at the top, with the context as upvalue. */
void lw_open_tasks(lua_State *L);
void lw_open_timers(lua_State *L);
void lw_open_uploader(lua_State *L);

#endif
