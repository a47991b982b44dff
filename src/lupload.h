/* lupload.h: the uploader userdata, shared by luploader.c (Lua send policies) and
 * luphttp.c (the built-in HTTP sender). Not a public API. */
#ifndef WSUP_LUPLOAD_H
#define WSUP_LUPLOAD_H

#include "lwsup.h"
#include "uploader.h"

#define UP_MT "wsup.uploader"
/* User values of the userdata: functions it calls. */
#define UV_SEND 1
#define UV_ONERROR 2
#define UV_HEADERS 3   /* headers option when it is a function */
#define UV_CLASSIFY 4

typedef struct lw_uphttp lw_uphttp;

typedef struct lw_up {
  upl u;             /* first: an upl* is an lw_up* */
  lw_ctx *c;
  int anchor;        /* registry ref while there is work; LUA_NOREF otherwise */
  lw_task *waiters;  /* tasks waiting in flush(); borrowed, each anchored as a task */
  lw_uphttp *http;   /* owned; NULL for a Lua send policy */
  long last_status;  /* HTTP status of the last response; 0 for none */
  struct lw_up *prev, *next; /* the context's list of live uploaders */
  char *name;        /* owned; NULL: "uploader" (or the redacted URL, set by luphttp.c) */
} lw_up;

static inline const char *lw_up_name(const lw_up *w) { return w->name ? w->name : "uploader"; }

/* upl_done, plus the log lines operators want (first failure, drop, recovery). */
void lw_up_done(lw_up *w, upl_result r, int64_t retry_after_ms, const char *err);

/* Pushes user value i of the uploader (anchored while it has work). */
void lw_up_push_uv(lw_up *w, lua_State *L, int i);
/* A duration option of the table at index 1, in ms; a bad one raises naming it. */
int64_t lw_up_opt_ms(lua_State *L, const char *name, int64_t def);

/* Reports the error message on top of L through on_error (or the log); pops it. */
void lw_up_report(lw_up *w, lua_State *L);

/* The HTTP sender: reads url, headers, timeouts, insecure, classify and
 * max_retry_after_ms from the options table at index 1 into w (userdata at -1). */
void lw_uphttp_init(lua_State *L, lw_up *w);
void lw_uphttp_free(lw_up *w);
void lw_uphttp_send(upl *u); /* ops->send of an HTTP uploader */

#endif
