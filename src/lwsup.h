/* lwsup.h: what the Lua bindings share: the per-state context, tasks, and the
 * Lua <-> JSON conversion. Not a public API. */
#ifndef WSUP_LWSUP_H
#define WSUP_LWSUP_H

#include <jansson.h>
#include <lua.h>
#include <lauxlib.h>

#include "evloop.h"
#include "http.h"
#include "pstore.h"
#include "uploader.h"

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
  http_client *http; /* owned; created on first use */
  /* What counts as the script's own work, so the host knows when only uploader
   * traffic is left (then it drains with a deadline instead of waiting forever). */
  unsigned producers;   /* active wsup.lines / watch / signal handles */
  unsigned user_timers; /* active wsup.after / every timers */
  unsigned send_tasks;  /* tasks running send policies */
  void *ups;            /* list of live uploaders (luploader.c); borrowed */
  void *prods;          /* list of active producers (lprod.c); borrowed */
  int64_t drain_ms;     /* how long the host drains at the end; default 5000 */
  int log_level;        /* 0 error, 1 warn, 2 info, 3 debug */
  unsigned user_signals[2]; /* active wsup.signal handlers for INT and TERM */
  /* Uploaders collected with state undelivered (closed, then dropped), for the final
   * report: up to LW_GONE_MAX entries, each NAME and REASON as two C strings, then only a count. */
  char *gone;           /* owned; NULL when none */
  size_t gone_len;
  unsigned gone_n, gone_more;
  int reported;         /* the final report ran: later collections are the process ending */
  int interrupted;      /* the host is leaving on a second signal, before its drain could end */
} lw_ctx;
#define LW_GONE_MAX 32

lw_ctx *lw_getctx(lua_State *L);   /* the context, from the registry */

/* The thread to run Lua on from a loop callback: the one driving the loop. */
static inline lua_State *lw_driver(const lw_ctx *c) { return c->L ? c->L : c->main; }

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

/* Starts the function below nargs arguments on L's top as a task, now. Pops them. Returns
 * the task, which stays valid until done has run (it may already have, inside this call). */
lw_task *lw_spawn(lw_ctx *c, lua_State *L, int nargs, lw_done_fn done, void *ud);
lw_task *lw_current(lw_ctx *c, lua_State *L); /* the task running on L, or NULL */
/* Where a call that waits (sleep, flush, a request) is: the current task, which may yield
 * here; or NULL outside any task with the loop not running (the caller drives the loop).
 * Raises, naming who, in a task where it cannot yield (a metamethod, a C function such as
 * table.sort) and outside a task while the loop runs. Called before arming anything. */
lw_task *lw_waiter(lw_ctx *c, lua_State *L, const char *who);
void lw_wake(lw_task *t, lw_push_fn push, void *ud); /* resumes t on the next turn */
int lw_wait(lua_State *L);                   /* yields the current task; use as `return lw_wait(L)` */
void lw_report(lua_State *L, const char *what); /* prints the error on top of L to stderr, pops it */
/* Calls the function below nargs args under a traceback handler; returns the status and
 * leaves nres results, or the message with a traceback. */
int lw_pcall(lua_State *L, int nargs, int nres);

/* Coalesces the patch at idx into u's pending patch; on bad input raises
 * "path: reason" and changes nothing. Does not check whether u is closed. */
void lc_enqueue(lua_State *L, int idx, upl *u);
void lc_push_ps(lua_State *L, const ps_val *v);  /* stored value -> a fresh Lua value */
void lc_push_obj(lua_State *L, const ps_obj *o);
void lc_push_obj_copy(lua_State *L, const ps_obj *o); /* o may change under the push (finalizers): copies first */
void lc_push(lua_State *L, const json_t *v);     /* jansson value -> a fresh Lua value */

#define LW_MS_MAX 1000000000000000LL /* longest duration in ms, about 31,000 years: "forever" without overflowing int64 */
int64_t lw_checkms(lua_State *L, int idx); /* a non-negative duration in ms, at most LW_MS_MAX */

/* Registers metatable mt (methods, __index = itself) and adds f to the module table at
 * the top, with the context as upvalue. */
void lw_open_class(lua_State *L, const char *mt, const luaL_Reg *meth, const luaL_Reg *f);

/* Each adds its functions to the module table at the top, with the context as upvalue. */
void lw_open_tasks(lua_State *L);
void lw_open_timers(lua_State *L);
void lw_open_uploader(lua_State *L);
void lw_open_receiver(lua_State *L); /* lreceiver.c */
void lw_open_http(lua_State *L);
void lw_open_producers(lua_State *L);
void lw_open_log(lua_State *L);
void lw_open_crypto(lua_State *L);

void lw_stop_producers(lw_ctx *c);
int lw_signum(const char *name);  /* "int", "SIGTERM", ... -> number; 0 if unknown */
/* Uploaders with state not delivered: 0 when none; else prints one line each to stderr. */
int lw_report_undelivered(lw_ctx *c);
int lw_uploaders_idle(lw_ctx *c);   /* nothing pending or in flight anywhere */
/* Writes "time level [who] message" to stderr when level <= the context's level. */
void lw_log(lw_ctx *c, int level, const char *who, const char *fmt, ...);
void lw_redact_url(char *dst, size_t n, const char *url); /* user:pass@ -> ***@ */

http_client *lw_http(lw_ctx *c, char *err, size_t errlen); /* the shared client, created on first use; NULL with a message */
const char *lw_http_code(int curl_err); /* "timeout", "refused", "dns", "reset", ... */
/* A finished transfer, copied out of libcurl's buffers. */
typedef struct lw_hres {
  lw_ctx *c;
  http_xfer *x;      /* while in progress */
  lw_task *task;     /* to wake; NULL when a plain caller drives the loop */
  int done;
  long status;
  int err;           /* CURLcode; 0 when an HTTP response arrived */
  char errmsg[256];
  char *hdr;         /* "name\0value\0" pairs; owned */
  size_t hdr_len;
  char *body;        /* owned */
  size_t body_len;
  int truncated;     /* the body is the first part of a longer one (http_res.truncated) */
} lw_hres;
void lw_hres_copy(lw_hres *h, const http_res *r);
void lw_hres_clear(lw_hres *h);                 /* frees what h owns */
void lw_hres_push(lua_State *L, const lw_hres *h); /* {status=, headers=, body= [, truncated=true]} or {error=, code=} */
const char *lw_hres_header(const lw_hres *h, const char *name); /* lower-case name; borrowed or NULL */
const char *lw_hres_error(const lw_hres *h);

/* Pushes "Name: value" lines for the {name = value} table at idx; returns how many. */
int lw_header_lines(lua_State *L, int idx, const char **lines, int max, const char *who);

/* `wsup serve [--host H] [--port N] [--max-body BYTES]`: the receiver alone; returns the exit status. */
int lw_serve(int argc, char **argv);

#endif
