/* evloop.c: the event loop; see evloop.h. Timers live in a binary min-heap ordered by
 * (due, seq) so that equal deadlines fire in start order, which keeps virtual-time
 * runs deterministic. */
#include "evloop.h"

#include <stdlib.h>
#include <time.h>

static int before(const wl_timer *a, const wl_timer *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void place(wl_loop *l, size_t i, wl_timer *t) {
  l->heap[i] = t;
  t->slot = i + 1;
}

static void sift_up(wl_loop *l, size_t i) {
  wl_timer *t = l->heap[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!before(t, l->heap[p])) break;
    place(l, i, l->heap[p]);
    i = p;
  }
  place(l, i, t);
}

static void sift_down(wl_loop *l, size_t i) {
  wl_timer *t = l->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= l->n) break;
    if (c + 1 < l->n && before(l->heap[c + 1], l->heap[c])) c++;
    if (!before(l->heap[c], t)) break;
    place(l, i, l->heap[c]);
    i = c;
  }
  place(l, i, t);
}

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

int wl_init(wl_loop *l) {
  int rc;
  *l = (wl_loop){0};
  if ((rc = uv_loop_init(&l->uv)) != 0) return rc;
  if ((rc = uv_timer_init(&l->uv, &l->wake)) != 0) {
    uv_loop_close(&l->uv);
    return rc;
  }
  l->origin = uv_now(&l->uv);
  l->rng = (uint64_t)time(NULL) ^ uv_hrtime();
  return 0;
}

static void closed_cb(uv_handle_t *h) { (void)h; }

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, closed_cb);
}

/* Every module closed its handles already; anything left is closed here so that
 * uv_loop_close succeeds, and close callbacks get their turn. */
void wl_close(wl_loop *l) {
  uv_walk(&l->uv, close_any, NULL);
  uv_run(&l->uv, UV_RUN_DEFAULT);
  uv_loop_close(&l->uv);
  free(l->heap);
  l->heap = NULL;
  l->n = l->cap = 0;
}

int64_t wl_now(wl_loop *l) {
  if (l->virt) return l->vnow;
  uv_update_time(&l->uv);
  return (int64_t)(uv_now(&l->uv) - l->origin);
}

int wl_set_virtual(wl_loop *l, int on) {
  on = on != 0;
  if (on && l->virt) {
    /* Virtual again: time restarts at 0 and pending deadlines keep their distance, so
     * a test's setup may reset the clock even if an earlier test left work behind. */
    for (size_t i = 0; i < l->n; i++) l->heap[i]->due -= l->vnow;
    l->rebased += l->vnow;
    l->vnow = 0;
    return 0;
  }
  if (on == l->virt) return 0;
  if (l->n || l->head || l->turn) return -1;
  l->virt = on;
  l->vnow = 0;
  return 0;
}

void wl_seed(wl_loop *l, uint64_t seed) { l->rng = seed; }

double wl_random(wl_loop *l) {
  return (double)(splitmix64(&l->rng) >> 11) * 0x1.0p-53;
}

void wl_timer_start(wl_loop *l, wl_timer *t, int64_t delay, wl_fn fn, void *ud) {
  if (t->slot) wl_timer_stop(l, t);
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 16;
    wl_timer **h = realloc(l->heap, cap * sizeof *h);
    if (!h) abort(); /* a timer that silently never fires is worse than a crash */
    l->heap = h;
    l->cap = cap;
  }
  int64_t now = wl_now(l);
  if (delay < 0) delay = 0;
  t->due = delay > INT64_MAX - now ? INT64_MAX : now + delay; /* saturates: never due, not due at once */
  t->seq = l->seq++;
  t->fn = fn;
  t->ud = ud;
  l->heap[l->n++] = t;
  sift_up(l, l->n - 1);
}

void wl_timer_stop(wl_loop *l, wl_timer *t) {
  size_t i;
  if (!t->slot) return;
  i = t->slot - 1;
  t->slot = 0;
  if (i == --l->n) return;
  place(l, i, l->heap[l->n]);
  sift_up(l, i);
  sift_down(l, l->heap[i]->slot - 1);
}

void wl_defer(wl_loop *l, wl_job *j, wl_fn fn, void *ud) {
  if (j->queued) return;
  j->fn = fn;
  j->ud = ud;
  j->next = NULL;
  j->queued = 1;
  if (l->tail) l->tail->next = j;
  else l->head = j;
  l->tail = j;
  /* From a libuv callback: uv_run(UV_RUN_ONCE) runs due timers (libcurl's) before it
   * polls, and would otherwise block in that poll with this job waiting. */
  if (l->in_uv) uv_stop(&l->uv);
}

/* Unlinks j from the list at *head; returns 1 when it was there. */
static int unlink_job(wl_job **head, wl_job **tail, wl_job *j) {
  wl_job *prev = NULL;
  for (wl_job **p = head; *p; prev = *p, p = &(*p)->next) {
    if (*p != j) continue;
    *p = j->next;
    if (tail && *tail == j) *tail = prev;
    return 1;
  }
  return 0;
}

void wl_cancel(wl_loop *l, wl_job *j) {
  if (!j->queued) return;
  if (unlink_job(&l->head, &l->tail, j) || unlink_job(&l->turn, NULL, j)) {
    j->queued = 0;
    j->next = NULL;
  }
}

int wl_busy(wl_loop *l) { return l->head || l->turn || l->n || uv_loop_alive(&l->uv); }

void wl_stop(wl_loop *l) { l->stop = 1; }

/* Runs the jobs queued before this turn; jobs they queue wait for the next one.
 * The turn's jobs move to their own list, so cancelling any of them is safe. */
static void run_jobs(wl_loop *l) {
  wl_job *j, **end = &l->turn;
  while (*end) end = &(*end)->next; /* a wl_run nested in a job: the outer turn's jobs stay first */
  *end = l->head;
  l->head = l->tail = NULL;
  while ((j = l->turn) != NULL) {
    l->turn = j->next;
    j->queued = 0;
    j->next = NULL;
    j->fn(j->ud);
  }
}

/* The ms that restarts of virtual time took back since *mark, which moves on to now: a
 * time held across a callback ("now", a deadline) goes back by as much as the timers did. */
static int64_t taken_back(const wl_loop *l, int64_t *mark) {
  int64_t d = l->rebased - *mark;
  *mark = l->rebased;
  return d;
}

/* Fires timers due by now that were started before this turn began (seq below limit). */
static void fire_due(wl_loop *l, int64_t now, uint64_t limit) {
  int64_t mark = l->rebased;
  while (l->n && l->heap[0]->seq < limit) {
    wl_timer *t = l->heap[0];
    now -= taken_back(l, &mark);
    if (t->due > now) break;
    wl_timer_stop(l, t);
    t->fn(t->ud);
  }
}

static void wake_cb(uv_timer_t *h) { uv_stop(h->loop); } /* fired before the poll: do not block in it */

static void run_uv(wl_loop *l, uv_run_mode mode) {
  l->in_uv++;
  uv_run(&l->uv, mode);
  l->in_uv--;
}

/* Waits for I/O or the next deadline; returns 0 when there is nothing to wait for. */
static int wait_turn(wl_loop *l, int64_t now, int64_t deadline) {
  int64_t next = l->n ? l->heap[0]->due : -1;
  if (deadline >= 0 && (next < 0 || next > deadline)) next = deadline;
  if (l->virt) {
    run_uv(l, UV_RUN_NOWAIT);
    if (l->head) return 1;
    if (l->n) {
      l->vnow = next;
      return 1;
    }
    if (!uv_loop_alive(&l->uv)) return 0;
    /* Only I/O can make progress. A request (a file read) completes by itself: wait for it.
     * Handles alone (a signal, a pipe) may never fire: time jumps to the caller's deadline. */
    if (deadline >= 0 && !l->uv.active_reqs.count) {
      l->vnow = deadline;
      return 1;
    }
    run_uv(l, UV_RUN_ONCE);
    return 1;
  }
  if (!l->n && !uv_loop_alive(&l->uv)) return 0;
  if (next >= 0) uv_timer_start(&l->wake, wake_cb, (uint64_t)(next > now ? next - now : 0), 0);
  run_uv(l, UV_RUN_ONCE);
  uv_timer_stop(&l->wake);
  return 1;
}

int wl_run(wl_loop *l, int64_t deadline, int (*done)(void *), void *ud) {
  int r = 0;
  int64_t mark = l->rebased;
  l->running++;
  for (;;) {
    int64_t now;
    int64_t back = taken_back(l, &mark);
    if (deadline >= 0 && (deadline -= back) < 0) deadline = 0; /* already passed: not "no deadline" */
    if (done && done(ud)) {
      r = 1;
      break;
    }
    if (l->stop) {
      l->stop = 0;
      break;
    }
    now = wl_now(l);
    if (deadline >= 0 && now >= deadline) break;
    if (l->head || (l->n && l->heap[0]->due <= now)) {
      /* Work that is always ready (a task sleeping 0 ms in a loop) must not starve
       * I/O: every few busy turns, poll without blocking (on either clock: a poll
       * that does not block does not move virtual time). */
      if (++l->busy_turns >= 8) {
        l->busy_turns = 0;
        run_uv(l, UV_RUN_NOWAIT);
      }
      /* Timers due now fire in a turn that also ran jobs: a stream of next-turn work
       * (a task that enqueues and flushes in a loop) must not keep them waiting. */
      uint64_t limit = l->seq; /* timers that the turn's jobs start wait for a later turn */
      if (l->head) run_jobs(l);
      now -= taken_back(l, &mark);
      if (l->n && l->heap[0]->due <= now) fire_due(l, now, limit);
    } else {
      l->busy_turns = 0;
      if (!wait_turn(l, now, deadline)) break;
    }
  }
  l->running--;
  return r;
}
