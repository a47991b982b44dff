/* evloop.h: one event loop: libuv underneath, a real or virtual millisecond clock,
 * a timer heap and a queue of next-turn jobs. Lua-free. */
#ifndef WSUP_EVLOOP_H
#define WSUP_EVLOOP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef void (*wl_fn)(void *ud);

/* A timer is embedded in its owner; the loop only links it into the heap. */
typedef struct wl_timer {
  int64_t due;   /* deadline in loop ms */
  uint64_t seq;  /* ties break in start order */
  size_t slot;   /* heap index + 1; 0 when not active */
  wl_fn fn;
  void *ud;
} wl_timer;

/* A next-turn job, embedded in its owner; queued at most once at a time. */
typedef struct wl_job {
  struct wl_job *next;
  wl_fn fn;
  void *ud;
  int queued;
} wl_job;

typedef struct wl_loop {
  uv_loop_t uv;         /* owned; handles of other modules live on it */
  uv_timer_t wake;      /* real mode: ends uv_run at the earliest deadline */
  int virt;             /* 1 when the clock is virtual */
  int64_t vnow;         /* virtual now, ms */
  int64_t rebased;      /* ms that restarts of virtual time took back, in all: deadlines held
                         * across a callback move back by what this grew */
  uint64_t origin;      /* uv_now() at creation: real time starts near 0 */
  wl_timer **heap;      /* owned array of borrowed timers */
  size_t n, cap;
  uint64_t seq;
  wl_job *head, *tail;  /* borrowed jobs, FIFO */
  wl_job *turn;         /* the jobs of the turn being run */
  uint64_t rng;         /* splitmix64 state for jitter */
  int running;          /* nesting depth of wl_run */
  int in_uv;            /* inside uv_run: a job queued now must end its poll at once */
  int busy_turns;       /* turns in a row that found work ready without waiting */
  int stop;             /* set by wl_stop: the innermost wl_run returns */
} wl_loop;

int wl_init(wl_loop *l);             /* 0 or a libuv error code */
void wl_close(wl_loop *l);           /* closes the loop; other modules closed their handles first */
int64_t wl_now(wl_loop *l);
/* Switching modes: 0, or -1 while timers or jobs are active. Virtual time restarts at 0;
 * asking for virtual while virtual does that at any time, deadlines kept relative. */
int wl_set_virtual(wl_loop *l, int on);
void wl_seed(wl_loop *l, uint64_t seed);
double wl_random(wl_loop *l);        /* uniform in [0,1) */

void wl_timer_start(wl_loop *l, wl_timer *t, int64_t delay, wl_fn fn, void *ud);
void wl_timer_stop(wl_loop *l, wl_timer *t);
static inline int wl_timer_active(const wl_timer *t) { return t->slot != 0; }

void wl_defer(wl_loop *l, wl_job *j, wl_fn fn, void *ud); /* no-op when already queued */
void wl_cancel(wl_loop *l, wl_job *j);

int wl_busy(wl_loop *l);             /* jobs, timers or active libuv handles */

/* Runs turns until done(ud) holds (returns 1), the deadline (loop ms, -1 for none)
 * passes, wl_stop is called or no work remains (returns 0). done may be NULL. */
int wl_run(wl_loop *l, int64_t deadline, int (*done)(void *), void *ud);
void wl_stop(wl_loop *l);

#endif
